"""``trackbridge sync``: deliver the spools that dead clients left behind.

Usage: python -m client_sdk.sync [SPOOL_DIR] [--receiver HOST:PORT] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from bridge import envvars
from bridge.channel import ChannelSecurity
from client_sdk._transport import Transport, TransportError
from client_sdk.config import DEFAULT_RECEIVER, default_spool_dir
from client_sdk.spool import Spool

_logger = logging.getLogger(__name__)


def sync(
    directory: Path, receiver: str, timeout_s: float, security: ChannelSecurity | None = None
) -> tuple[int, int]:
    """Sends every batch of every orphaned spool in ``directory``, oldest first.

    Returns ``(events delivered, events left)``; what is left stays in its spool. ``security``
    is the TLS and token settings (a receiver that requires tokens takes only the batches of
    the client the token belongs to).
    """
    deadline = time.monotonic() + timeout_s
    transport = Transport(receiver, 10.0, security)
    delivered = left = 0
    try:
        for spool in Spool.orphans(directory):
            try:
                for batch in spool.batches():
                    size = batch.last_seq - batch.first_seq + 1
                    if not _deliver(transport, spool, batch.id, deadline):
                        left += size
                        continue
                    delivered += size
            finally:
                spool.close()
    finally:
        transport.close()
    return delivered, left


def _deliver(transport: Transport, spool: Spool, batch_id: int, deadline: float) -> bool:
    delay = 0.1
    while time.monotonic() < deadline:
        try:
            transport.publish(spool.payload(batch_id), min(10.0, deadline - time.monotonic()))
        except TransportError as exc:
            if not exc.retryable:
                _logger.error("batch %d refused by the receiver: %s", batch_id, exc)
                return False
            time.sleep(min(max(delay, exc.retry_after_s), max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)
            continue
        spool.remove([batch_id])
        return True
    return False


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    """Entry point; exit status 0 when nothing is left to deliver."""
    parser = argparse.ArgumentParser(prog="trackbridge sync", description=__doc__)
    parser.add_argument("spool_dir", nargs="?", type=Path)
    parser.add_argument("--receiver", help="host:port (default TRACKBRIDGE_RECEIVER)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    directory = args.spool_dir
    if directory is None:
        directory = Path(env.get(envvars.TRACKBRIDGE_SPOOL_DIR) or default_spool_dir(env))
    receiver = args.receiver or env.get(envvars.TRACKBRIDGE_RECEIVER, DEFAULT_RECEIVER)
    delivered, left = sync(directory, receiver, args.timeout, ChannelSecurity.resolve(env=env))
    print(f"delivered {delivered} events from {directory}; {left} left")
    return 0 if left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
