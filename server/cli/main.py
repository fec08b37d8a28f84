"""The ``trackbridge`` command: one subcommand per module of this package.

``demo`` and ``bench`` drive receivers and clients together, so they live outside the product
packages (in ``demo`` and ``bench`` of a clone of the repository, not in the wheel, which claims
only ``bridge``, ``client_sdk`` and ``server``); this command only launches them, as it launches
the client-side ``sync``, so that the receiver's package never imports client code.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import cast

from bridge import envvars
from server.cli.args import (
    Parser,
    UsageError,
    dial_address,
    existing_data_dir,
    fail,
    positive_float,
)
from server.cli.logs import configure_logging
from server.config import DEFAULT_DATA_DIR, ReceiverConfig

_LAUNCHED = {
    "demo": ("demo", "train N small torch models that log through a receiver"),
    "bench": ("bench", "measure the bridge side by side with direct MLflow logging"),
}
"""Subcommands run as ``python -m MODULE ARGS`` (name: (module, help))."""


def default_spool_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where writers spool by default: ``TRACKBRIDGE_SPOOL_DIR``, else
    ``$XDG_CACHE_HOME/trackbridge/spool``, else ``~/.cache/trackbridge/spool``.

    The same rule as ``client_sdk.config.default_spool_dir`` (the receiver's package does not
    import client code; tests/live/test_cli_errors.py checks that the two agree).
    """
    if env.get(envvars.TRACKBRIDGE_SPOOL_DIR):
        return Path(env[envvars.TRACKBRIDGE_SPOOL_DIR])
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache, "trackbridge", "spool")


def _add_sync(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sync", help="deliver the spools that dead clients left behind")
    p.add_argument(
        "spool_dir",
        nargs="?",
        type=Path,
        help="the writers' spool folder (default: TRACKBRIDGE_SPOOL_DIR, else"
        " $XDG_CACHE_HOME/trackbridge/spool, else ~/.cache/trackbridge/spool)",
    )
    p.add_argument(
        "--receiver",
        type=dial_address,
        metavar="HOST:PORT",
        help="deliver only the spools written for this receiver (default: each spool goes to"
        " the receiver it was written for)",
    )
    p.add_argument(
        "--to-another-receiver",
        action="store_true",
        help="send every spool to --receiver, whatever receiver it was written for",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="give up on what is not delivered by then (default 300)",
    )
    p.set_defaults(func=_sync)


def _sync(args: argparse.Namespace) -> int:
    directory = args.spool_dir if args.spool_dir is not None else default_spool_dir()
    if not directory.exists():
        origin = "" if args.spool_dir is not None else " (the default)"
        raise UsageError(
            f"no spool folder at {directory}{origin}: pass the folder the writers spooled to"
            f" (their {envvars.TRACKBRIDGE_SPOOL_DIR} or WriterConfig.spool_dir)"
        )
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a folder: pass the writers' spool folder")
    if args.to_another_receiver and not args.receiver:
        raise UsageError("--to-another-receiver needs --receiver HOST:PORT (where to send them)")
    if args.receiver:
        _check_receiver(args.receiver)
    # The sync tool is client-side code; the receiver's package only launches it.
    argv = [sys.executable, "-m", "client_sdk.sync", "--timeout", str(args.timeout)]
    argv.append(str(directory))
    if args.receiver:
        argv += ["--receiver", args.receiver]
    if args.to_another_receiver:
        argv.append("--to-another-receiver")
    return subprocess.call(argv)


def _check_receiver(receiver: str) -> None:
    """Fails in one line when no receiver answers at ``receiver`` (any of a list)."""
    if os.environ.get(envvars.TRACKBRIDGE_TLS_CERT):
        return  # mutual TLS: a health check without the client's certificate proves nothing
    from server.cli.health import check

    ca = os.environ.get(envvars.TRACKBRIDGE_TLS_CA)
    codes = []
    for address in receiver.split(","):
        code = check(address.strip(), timeout_s=5.0, tls_ca=Path(ca) if ca else None)
        if code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            return  # it answers (SERVING, NOT_SERVING while MLflow is down: it still stores)
        codes.append(code)
    raise UsageError(
        f"no receiver answers at {receiver} ({', '.join(codes)}): start it"
        " (trackbridge serve) or pass --receiver HOST:PORT; nothing was sent"
    )


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="runs, backlog and dead letters of a receiver's queue")
    p.add_argument(
        "--data-dir", help=f"the receiver's data directory (default ./{DEFAULT_DATA_DIR})"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    import sqlite3

    from server.cli.status import print_status

    data_dir = existing_data_dir(ReceiverConfig.resolve(data_dir=args.data_dir).data_dir)
    if not (data_dir / "queue.db").is_file():
        raise UsageError(
            f"no receiver queue (queue.db) in {data_dir}: pass the --data-dir a receiver"
            " was started with"
        )
    try:
        return print_status(data_dir, args.json)
    except sqlite3.Error as exc:
        raise UsageError(f"cannot read {data_dir / 'queue.db'}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface, for ``--help`` and for tests of deployment files.

    The receiver's commands are imported here, not with this module, so that ``trackbridge
    --version`` answers where only the client is installed (no ``server`` extra)."""
    from server.cli.dead_letters import add_dead_letters_command
    from server.cli.docs import add_docs_command
    from server.cli.flush import add_flush_command
    from server.cli.health import add_health_command
    from server.cli.security import add_security_commands
    from server.cli.serve import add_serve_command
    from server.cli.tls import add_tls_command
    from server.cli.viewers import add_viewer_commands

    parser = Parser(
        prog="trackbridge",
        description="MLflow logging from many training clients, through one receiver.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"trackbridge {version()}")
    # Every subcommand's parser is a Parser too (argparse makes them of the parent's class).
    sub = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", required=True),
    )
    add_serve_command(sub)
    add_flush_command(sub)
    for name, (_module, text) in _LAUNCHED.items():
        sub.add_parser(name, help=f"{text} (see: trackbridge {name} --help)", add_help=False)
    _add_sync(sub)
    _add_status(sub)
    add_dead_letters_command(sub)
    add_viewer_commands(sub)
    add_health_command(sub)
    add_security_commands(sub)
    add_tls_command(sub)
    add_docs_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trackbridge`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:
        print(f"trackbridge {version()}")
        return 0
    if argv and argv[0] in _LAUNCHED:
        _launch(_LAUNCHED[argv[0]][0], argv[1:])
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        result: int = args.func(args)
    except UsageError as exc:
        return fail(args.command, str(exc))
    except KeyboardInterrupt:
        return 130
    return result


def version() -> str:
    """The installed distribution's version (``unknown`` when run from a bare source tree)."""
    try:
        return importlib.metadata.version("trackbridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


REPO = Path(__file__).resolve().parents[2]
"""The clone this code runs from, where ``demo`` and ``bench`` live (not in the wheel)."""


def _launch(module: str, argv: list[str]) -> None:
    """Replaces this process with ``python -m module argv`` (signals and exit code go straight
    to it), the clone's root first on its path (and its children's, through PYTHONPATH). ``-P``
    keeps the working directory off its path, so that a user's own ``demo.py`` cannot shadow
    the module."""
    if not (REPO / module / "__init__.py").is_file():
        sys.exit(
            f"trackbridge {module}: runs from a clone of the repository (it is not in the"
            f" wheel): clone it, pip install -e '.[server,torch]', then trackbridge {module}"
        )
    path = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    argv = [sys.executable, *safe_path, "-m", module, *argv]
    os.execve(sys.executable, argv, env)  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
