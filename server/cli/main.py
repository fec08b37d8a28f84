"""The ``trackbridge`` command: one subcommand per module of this package.

``demo`` and ``bench`` drive receivers and clients together, so they live outside the product
packages (in ``demo`` and ``bench``); this command only launches them, as it launches the
client-side ``sync``, so that the receiver's package never imports client code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

from server.cli.dead_letters import add_dead_letters_command
from server.cli.health import add_health_command
from server.cli.logs import configure_logging
from server.cli.security import add_security_commands
from server.cli.serve import add_serve_command
from server.cli.viewers import add_viewer_commands
from server.config import DEFAULT_DATA_DIR, ReceiverConfig

_LAUNCHED = {
    "demo": ("demo", "train N small torch models that log through a receiver"),
    "bench": ("bench", "measure the bridge side by side with direct MLflow logging"),
}
"""Subcommands run as ``python -m MODULE ARGS`` (name: (module, help))."""


def _add_sync(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sync", help="deliver the spools that dead clients left behind")
    p.add_argument("spool_dir", nargs="?", help="default: TRACKBRIDGE_SPOOL_DIR or ~/.cache")
    p.add_argument("--receiver", help="host:port (default TRACKBRIDGE_RECEIVER)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS")
    p.set_defaults(func=_sync)


def _sync(args: argparse.Namespace) -> int:
    # The sync tool is client-side code; the receiver's package only launches it.
    argv = [sys.executable, "-m", "client_sdk.sync", "--timeout", str(args.timeout)]
    if args.spool_dir:
        argv.append(args.spool_dir)
    if args.receiver:
        argv += ["--receiver", args.receiver]
    return subprocess.call(argv)


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="runs, backlog and dead letters of a receiver's queue")
    p.add_argument(
        "--data-dir", help=f"the receiver's data directory (default ./{DEFAULT_DATA_DIR})"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from server.cli.status import print_status

    config = ReceiverConfig.resolve(data_dir=args.data_dir)
    return print_status(config.data_dir, args.json)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface, for ``--help`` and for tests of deployment files."""
    parser = argparse.ArgumentParser(
        prog="trackbridge",
        description="MLflow logging from many training clients, through one receiver.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_command(sub)
    for name, (_module, text) in _LAUNCHED.items():
        sub.add_parser(name, help=f"{text} (see: trackbridge {name} --help)", add_help=False)
    _add_sync(sub)
    _add_status(sub)
    add_dead_letters_command(sub)
    add_viewer_commands(sub)
    add_health_command(sub)
    add_security_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trackbridge`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _LAUNCHED:
        _launch(_LAUNCHED[argv[0]][0], argv[1:])
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    result: int = args.func(args)
    return result


def _launch(module: str, argv: list[str]) -> None:
    """Replaces this process with ``python -m module argv`` (signals and exit code go straight
    to it). ``-P`` keeps the working directory off its path, so that a user's own ``demo.py``
    cannot shadow the module."""
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    os.execv(sys.executable, [sys.executable, *safe_path, "-m", module, *argv])  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
