"""``trackbridge bench``: measure the bridge side by side with direct MLflow logging, in one run
(``python -m bench`` runs the same)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.config import BenchOptions
from bench.main import run_bench, run_sweep_bench
from server.cli.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trackbridge bench`` (``python -m bench``)."""
    p = argparse.ArgumentParser(prog="trackbridge bench", description=__doc__)
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
    sizes.add_argument("--recovery-runs", type=int, help="runs in the recovery section (20)")
    sizes.add_argument("--recovery-points", type=int, help="points of each (5000)")
    sizes.add_argument(
        "--recovery-kill-at", type=float, help="share in MLflow at the SIGKILL (0.9)"
    )
    args = p.parse_args(argv)
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
        recovery_runs=args.recovery_runs,
        recovery_points=args.recovery_points,
        recovery_kill_at=args.recovery_kill_at,
        sections=tuple(args.only.split(",")) if args.only else None,
        json_path=args.json,
        png_path=args.png,
        work_dir=args.work_dir,
    )
    if args.sweep:
        return run_sweep_bench(options, quick=args.quick)
    return run_bench(options, quick=args.quick)


if __name__ == "__main__":
    configure_logging()
    sys.exit(main())
