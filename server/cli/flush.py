"""``trackbridge flush --queue nats://...``: a flusher alone, for a fleet.

It pulls the fleet's JetStream lanes and writes them to MLflow, like the flusher inside every
``serve --queue nats://...``, and takes no clients: it is a fleet receiver whose gRPC port is
a random loopback port nobody is told and whose live view is off. Run as many as MLflow
takes; each lane is flushed by one of them at a time.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from bridge import envvars
from server.cli.args import UsageError, positive_float
from server.cli.serve import add_serve_command
from server.config import DEFAULT_DATA_DIR
from server.fleet.config import is_fleet_url


def add_flush_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("flush", help="write a fleet's NATS JetStream queue to MLflow (no clients)")
    p.add_argument(
        "--queue",
        metavar="nats://HOST:PORT[,...]",
        help="the fleet's NATS cluster (env TRACKBRIDGE_QUEUE)",
    )
    p.add_argument("--data-dir", help=f"working set and state (default ./{DEFAULT_DATA_DIR})")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--flush-interval", type=positive_float, metavar="SECONDS", help="default 1.0")
    p.add_argument("--shutdown-timeout", type=positive_float, metavar="SECONDS", help="default 30")
    p.add_argument(
        "--run-lease",
        type=positive_float,
        metavar="SECONDS",
        help="end a run KILLED when its client is silent this long (default 600)",
    )
    p.add_argument("--ready-file", type=Path, help="written once flushing")
    p.set_defaults(func=_flush)


def serve_argv(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> list[str]:
    """The ``trackbridge serve`` arguments a ``trackbridge flush`` runs with."""
    queue = args.queue or env.get(envvars.TRACKBRIDGE_QUEUE, "")
    if not is_fleet_url(queue):
        raise UsageError(
            f"--queue must be nats://HOST:PORT[,...] (or env {envvars.TRACKBRIDGE_QUEUE}),"
            f" got {queue!r}"
        )
    argv = ["serve", "--listen", "127.0.0.1:0", "--http-listen", "off", "--queue", queue]
    for flag, value in (
        ("--data-dir", args.data_dir),
        ("--tracking-uri", args.tracking_uri),
        ("--flush-interval", args.flush_interval),
        ("--shutdown-timeout", args.shutdown_timeout),
        ("--run-lease", args.run_lease),
        ("--ready-file", args.ready_file),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def _flush(args: argparse.Namespace) -> int:
    parser = argparse.ArgumentParser(prog="trackbridge")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    serve_args = parser.parse_args(serve_argv(args))
    result: int = serve_args.func(serve_args)
    return result
