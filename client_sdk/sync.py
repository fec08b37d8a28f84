"""``trackbridge sync``: deliver the spools that dead clients left behind.

Usage: python -m client_sdk.sync [SPOOL_DIR] [--receiver HOST:PORT [--to-another-receiver]]
[--timeout SECONDS]

Each spool goes to the receiver(s) it was written for (recorded in the spool). ``--receiver``
alone delivers only the spools written for that receiver; with ``--to-another-receiver`` every
spool goes there instead (a spool of an older trackbridge, which records no receiver, needs
both). One line per spool (events and artifacts delivered, left, lost) and per problem. Exit
status: 0 when everything was delivered and nothing lost, 1 when something is left or lost,
2 for a bad invocation.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bridge import envvars
from bridge.channel import ChannelSecurity
from client_sdk._transport import ArtifactTransport, Transport
from client_sdk.config import default_spool_dir
from client_sdk.spool.delivery import Delivery, SpoolReport
from client_sdk.spool.file import Spool
from client_sdk.spool.finding import adopt_orphans, corrupt_files, spool_paths
from client_sdk.spool.names import normalized_receiver

_PROG = "trackbridge sync"


class _Usage(Exception):
    """A bad invocation: one line, exit status 2."""


def sync(
    directory: Path,
    receiver: str | None,
    timeout_s: float,
    security: ChannelSecurity | None = None,
    *,
    to_another_receiver: bool = False,
    out: list[str] | None = None,
) -> list[SpoolReport]:
    """Delivers every orphaned spool in ``directory`` (see the module docstring for which
    receiver each goes to); returns one report per spool, and appends one line per spool and
    per problem to ``out``."""
    lines = out if out is not None else []
    deadline = time.monotonic() + timeout_s
    stop = threading.Event()
    wanted = normalized_receiver(receiver) if receiver else None
    found = adopt_orphans(directory, lambda _destination: True)
    reports = [SpoolReport(line.partition(":")[0], problems=[line]) for line in found.problems]
    lines.extend(found.problems)
    transports: dict[str, tuple[Transport, ArtifactTransport]] = {}
    try:
        for spool in found.adopted:
            target, why_not = _target(spool, wanted, to_another_receiver)
            if target is None:
                report = SpoolReport(spool.path.name, problems=[f"{spool.path.name}: {why_not}"])
                report.events_left = spool.outstanding_events()
                report.artifacts_left = len(list(spool.manifests()))
                spool.close(delete=False)
            else:
                if target not in transports:
                    transports[target] = (
                        Transport(target, 10.0, security),
                        ArtifactTransport(target, security),
                    )
                events, artifacts = transports[target]
                delivery = Delivery(
                    spool, events, _fixed(artifacts), deadline=lambda: deadline, interrupt=stop
                )
                report = delivery.run()
                spool.close(delete=report.complete)
                if report.unreachable and not report.complete:
                    report.problems.append(
                        f"{spool.path.name}: receiver {target} unreachable before the timeout"
                        f" ({report.unreachable}); what is left stays in the spool"
                    )
            reports.append(report)
            lines.append(report.summary())
            lines.extend([*report.problems, *report.notes])
    finally:
        for events, artifacts in transports.values():
            events.close()
            artifacts.close()
    lines.extend(_kept_aside(directory))
    return reports


def _kept_aside(directory: Path) -> list[str]:
    return [
        f"{path.name}: a damaged spool database moved aside earlier; delete it once you no"
        " longer need it"
        for path in corrupt_files(directory)
    ]


def _fixed(transport: ArtifactTransport) -> Callable[[], ArtifactTransport]:
    return lambda: transport


def _target(spool: Spool, wanted: str | None, to_another: bool) -> tuple[str | None, str]:
    """Where ``spool`` goes, or None and why not."""
    destination = spool.destination
    if destination is None:
        if wanted is not None and to_another:
            return wanted, ""
        return None, (
            "records no receiver (written by an older trackbridge, or its records are lost);"
            " deliver it with --receiver HOST:PORT --to-another-receiver"
        )
    if wanted is None or wanted == destination.receiver:
        return destination.receiver, ""
    if to_another:
        return wanted, ""
    return None, (
        f"written for {destination.describe()}; not sent to {wanted}: add"
        " --to-another-receiver to send it there"
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    """Entry point; exit status 0 when nothing is left or lost, 1 otherwise, 2 when misused."""
    parser = argparse.ArgumentParser(
        prog=_PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spool_dir", nargs="?", type=Path)
    parser.add_argument("--receiver", help="host:port: deliver only spools written for it")
    parser.add_argument(
        "--to-another-receiver",
        action="store_true",
        help="send every spool to --receiver, whatever it was written for",
    )
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        directory, receiver = _check(args, env)
        security = ChannelSecurity.resolve(env=env)
    except (_Usage, ValueError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    lines: list[str] = []
    if not spool_paths(directory):
        print("\n".join([*_kept_aside(directory), f"nothing to deliver in {directory}"]))
        return 0
    reports = sync(
        directory,
        receiver,
        args.timeout,
        security,
        to_another_receiver=args.to_another_receiver,
        out=lines,
    )
    for line in lines:
        print(line)
    delivered = sum(r.events_delivered for r in reports)
    left = sum(r.events_left for r in reports)
    lost = sum(r.events_lost for r in reports)
    files = sum(r.artifacts_delivered for r in reports)
    files_left = sum(r.artifacts_left + r.artifacts_lost for r in reports)
    print(
        f"delivered {delivered} events and {files} artifacts from {directory}; {left} events"
        f" left, {lost} lost; {files_left} artifacts left or lost"
    )
    return 0 if all(r.clean for r in reports) else 1


def _check(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Path, str | None]:
    directory: Path = args.spool_dir
    if directory is None:
        directory = Path(env.get(envvars.TRACKBRIDGE_SPOOL_DIR) or default_spool_dir(env))
    if not directory.is_dir():
        raise _Usage(
            f"no spool folder at {directory}: pass the folder the clients' spools are in (their"
            " TRACKBRIDGE_SPOOL_DIR)"
        )
    if args.to_another_receiver and not args.receiver:
        raise _Usage("--to-another-receiver needs --receiver HOST:PORT (where to send them)")
    if args.receiver:
        normalized_receiver(args.receiver)  # ValueError names the bad address
    if args.timeout <= 0:
        raise _Usage(f"--timeout must be positive, got {args.timeout}")
    return directory, args.receiver


if __name__ == "__main__":
    sys.exit(main())
