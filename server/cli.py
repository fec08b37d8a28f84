"""The ``trackbridge`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from server.config import DEFAULT_DATA_DIR, DEFAULT_LISTEN, ReceiverConfig, redact_uri
from server.health_check import add_health_command
from server.security_cli import (
    add_security_commands,
    add_serve_security_args,
    prepare_secrets,
    security_from_args,
)
from server.viewer_cli import add_viewer_commands


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the receiver daemon")
    p.add_argument("--listen", help=f"gRPC address host:port (default {DEFAULT_LISTEN})")
    p.add_argument("--data-dir", help=f"queue and embedded store (default ./{DEFAULT_DATA_DIR})")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else an embedded SQLite store)",
    )
    p.add_argument("--flush-interval", type=float, metavar="SECONDS", help="default 1.0")
    p.add_argument(
        "--fsync",
        choices=("normal", "full"),
        help="queue durability: normal survives process kill, full also power loss",
    )
    p.add_argument("--shutdown-timeout", type=float, metavar="SECONDS", help="default 30")
    p.add_argument(
        "--max-backlog",
        type=int,
        metavar="EVENTS",
        help="events not yet in MLflow past which clients are told to back off (default 2000000)",
    )
    p.add_argument(
        "--run-lease",
        type=float,
        metavar="SECONDS",
        help="end a run KILLED when its client is silent this long (default 600)",
    )
    live = p.add_argument_group("live view (web page, /metrics, Watch for top and tail)")
    live.add_argument(
        "--http-listen",
        metavar="HOST:PORT",
        help="web page and /metrics address, or 'off' (default: 127.0.0.1, gRPC port + 1;"
        " env TRACKBRIDGE_HTTP_LISTEN)",
    )
    live.add_argument(
        "--viewer-token",
        help="token the page, /metrics and Watch require; needed when --http-listen is not"
        " loopback (prefer env TRACKBRIDGE_VIEWER_TOKEN: flags show in ps)",
    )
    live.add_argument(
        "--client-timeout",
        type=float,
        metavar="SECONDS",
        help="show a client disconnected when silent this long (default 150)",
    )
    p.add_argument(
        "--ready-file", type=Path, help='write {"port": N, "http_port": M} here once serving'
    )
    add_serve_security_args(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from server.app import Receiver, serve
    from server.data_dir import DataDirInUse
    from server.tls import CertificateError

    prepare_secrets()
    try:
        config = _serve_config(args)
    except ValueError as exc:
        print(f"trackbridge serve: {exc}", file=sys.stderr)
        return 2

    def ready(receiver: Receiver) -> None:
        print(f"trackbridge receiver listening on port {receiver.port}", flush=True)
        print(f"  MLflow: {redact_uri(config.effective_tracking_uri)}", flush=True)
        if config.embedded:
            print(f"  view it: mlflow ui --backend-store-uri {config.effective_tracking_uri}")
        if receiver.http_port is not None:
            print(f"  live view: {receiver.live_url()}", flush=True)
        if args.ready_file is not None:
            tmp = args.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": receiver.port, "http_port": receiver.http_port}))
            tmp.replace(args.ready_file)

    try:
        drained = asyncio.run(serve(config, ready))
    except (CertificateError, DataDirInUse) as exc:
        print(f"trackbridge serve: {exc}", file=sys.stderr)
        return 2
    return 0 if drained else 1


def _serve_config(args: argparse.Namespace) -> ReceiverConfig:
    return ReceiverConfig.resolve(
        listen=args.listen,
        data_dir=args.data_dir,
        tracking_uri=args.tracking_uri,
        flush_interval_s=args.flush_interval,
        sqlite_synchronous=args.fsync.upper() if args.fsync else None,
        shutdown_timeout_s=args.shutdown_timeout,
        max_backlog_events=args.max_backlog,
        run_lease_s=args.run_lease,
        http_listen=args.http_listen,
        viewer_token=args.viewer_token,
        client_timeout_s=args.client_timeout,
        security=security_from_args(args),
    )


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="train N small torch models that log through a receiver")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=50, help="training steps per epoch")
    p.add_argument("--job", default="demo")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--flush-interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument(
        "--step-delay",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="pause per training step, so the live page has something to show (default 0.05)",
    )
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from server.demo import run_demo

    return run_demo(
        clients=args.clients,
        epochs=args.epochs,
        steps=args.steps,
        job=args.job,
        data_dir=args.data_dir,
        flush_interval_s=args.flush_interval,
        step_delay_s=args.step_delay,
    )


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
    from server.status import print_status

    config = ReceiverConfig.resolve(data_dir=args.data_dir)
    return print_status(config.data_dir, args.json)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the bridge side by side with direct MLflow logging (DESIGN.md figures)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: under a minute on 2 cores")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="how the figures change from 1 to 1000 clients and 1 to 100k events/s",
    )
    p.add_argument("--json", type=Path, default=Path("bench-results.json"), metavar="PATH")
    p.add_argument("--png", type=Path, metavar="PATH", help="draw a chart (needs matplotlib)")
    p.add_argument("--work-dir", type=Path, metavar="DIR", help="keep databases and logs here")
    p.add_argument(
        "--only", metavar="SECTIONS", help="comma-separated subset of the sections to run"
    )
    sizes = p.add_argument_group("sizes (defaults: full run; --quick picks smaller ones)")
    sizes.add_argument("--writer-calls", type=int, help="timed Writer.log_metric calls")
    sizes.add_argument("--mlflow-sync-calls", type=int, help="timed sync mlflow.log_metric calls")
    sizes.add_argument("--mlflow-async-calls", type=int, help="timed async mlflow.log_metric")
    sizes.add_argument("--clients", type=int, help="ingest client processes (16; quick 4)")
    sizes.add_argument("--batch-events", type=int, help="events per ingest batch (1000)")
    sizes.add_argument("--ingest-seconds", type=float, help="how long ingest clients send")
    sizes.add_argument("--fsync", choices=("normal", "full"), help="receiver queue durability")
    sizes.add_argument("--e2e-clients", type=int, help="clients logging into MLflow")
    sizes.add_argument("--events", type=int, help="points logged end to end, in all")
    sizes.add_argument("--fresh-clients", type=int, help="clients in the freshness section")
    sizes.add_argument("--fresh-rate", type=float, help="points/s per freshness client")
    sizes.add_argument("--fresh-seconds", type=float, help="how long freshness clients log")
    sizes.add_argument("--flush-interval", type=float, metavar="SECONDS", help="default 1.0")
    sizes.add_argument("--connections", type=int, help="connections held (1000; quick 100)")
    sizes.add_argument("--connection-procs", type=int, help="processes holding them")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from server.bench import run_bench, run_sweep_bench
    from server.bench_config import BenchOptions

    options = BenchOptions.resolve(
        quick=args.quick,
        writer_calls=args.writer_calls,
        mlflow_sync_calls=args.mlflow_sync_calls,
        mlflow_async_calls=args.mlflow_async_calls,
        clients=args.clients,
        batch_events=args.batch_events,
        ingest_s=args.ingest_seconds,
        fsync=args.fsync,
        e2e_clients=args.e2e_clients,
        events=args.events,
        fresh_clients=args.fresh_clients,
        fresh_rate=args.fresh_rate,
        fresh_s=args.fresh_seconds,
        flush_interval_s=args.flush_interval,
        connections=args.connections,
        connection_procs=args.connection_procs,
        sections=tuple(args.only.split(",")) if args.only else None,
        json_path=args.json,
        png_path=args.png,
        work_dir=args.work_dir,
    )
    if args.sweep:
        return run_sweep_bench(options, quick=args.quick)
    return run_bench(options, quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface, for ``--help`` and for tests of deployment files."""
    parser = argparse.ArgumentParser(prog="trackbridge", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_demo(sub)
    _add_sync(sub)
    _add_status(sub)
    _add_bench(sub)
    add_viewer_commands(sub)
    add_health_command(sub)
    add_security_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trackbridge`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # MLflow's own loggers are chatty at INFO (migrations, experiment creation).
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
