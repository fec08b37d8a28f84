"""A spool's ledger: a small JSON record kept in its lock file, outside the database.

It holds the destination and, per run, ``[last sequence spooled, last acknowledged]``. It is
rewritten in place (no fsync, like the spool's ``synchronous=NORMAL``) after every append and
every acknowledgement, so after a kill it is exact; after a power loss it is what reached the
disk. A database that lost its last commits, or cannot be read at all, is measured against it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from client_sdk.spool.names import Destination

_logger = logging.getLogger(__name__)

_MAX_BYTES = 1 << 22


def read_ledger(fd: int, path: Path) -> tuple[Destination | None, dict[str, list[int]]] | None:
    """The destination and run marks recorded in the open lock file ``fd`` (None: nothing, or
    nothing readable, is recorded)."""
    raw = b""
    with contextlib.suppress(OSError):
        raw = os.pread(fd, _MAX_BYTES, 0)
    if not raw.strip():
        return None
    try:
        # A crash between writing and truncating can leave old bytes after the record.
        record, _end = json.JSONDecoder().raw_decode(raw.decode())
        runs = {str(k): [int(v[0]), int(v[1])] for k, v in record.get("runs", {}).items()}
        d = record.get("destination")
        destination = Destination(str(d[0]), str(d[1]), str(d[2])) if d else None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        _logger.warning("trackbridge: the ledger of %s cannot be read (%s)", path, exc)
        return None
    return destination, runs


def write_ledger(
    fd: int, destination: Destination | None, runs: dict[str, list[int]], path: Path
) -> None:
    """Rewrites the record in the open lock file ``fd``; a failure is logged, not raised (only
    the loss accounting of a spool damaged later depends on it)."""
    d = destination
    record = {"destination": [d.receiver, d.job, d.client_id] if d else None, "runs": runs}
    data = json.dumps(record, separators=(",", ":")).encode()
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except OSError as exc:
        _logger.debug("trackbridge: ledger of %s not updated: %s", path, exc)
