"""``trackbridge bench``: measure the bridge side by side with direct MLflow logging, in one run
(``python -m bench`` runs the same)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.config import FLEET_SECTIONS, SECTIONS, BenchOptions
from bench.main import run_bench, run_sweep_bench
from server.cli.args import Parser, positive_float, positive_int
from server.cli.logs import configure_logging

_SECTIONS_TEXT = ", ".join(SECTIONS)


def _sections(text: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or repr(text)}; the sections are {_SECTIONS_TEXT}"
        )
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``trackbridge bench`` (``python -m bench``)."""
    p = Parser(prog="trackbridge bench", description=__doc__)
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
        "--only",
        type=_sections,
        nargs="?",
        const=(),
        metavar="SECTIONS",
        help=f"comma-separated sections to run, of: {_SECTIONS_TEXT} (a plain run leaves out"
        f" {', '.join(FLEET_SECTIONS)}: they start PostgreSQL and a thousand clients)",
    )
    sizes = p.add_argument_group("sizes (defaults: full run; --quick picks smaller ones)")
    sizes.add_argument("--writer-calls", type=positive_int, help="timed Writer.log_metric calls")
    sizes.add_argument(
        "--mlflow-sync-calls", type=positive_int, help="timed sync mlflow.log_metric calls"
    )
    sizes.add_argument(
        "--mlflow-async-calls", type=positive_int, help="timed async mlflow.log_metric"
    )
    sizes.add_argument("--clients", type=positive_int, help="ingest client processes (16; quick 4)")
    sizes.add_argument("--batch-events", type=positive_int, help="events per ingest batch (1000)")
    sizes.add_argument("--ingest-seconds", type=positive_float, help="how long ingest clients send")
    sizes.add_argument("--fsync", choices=("normal", "full"), help="receiver queue durability")
    sizes.add_argument("--e2e-clients", type=positive_int, help="clients logging into MLflow")
    sizes.add_argument("--events", type=positive_int, help="points logged end to end, in all")
    sizes.add_argument(
        "--fresh-clients", type=positive_int, help="clients in the freshness section"
    )
    sizes.add_argument("--fresh-rate", type=positive_float, help="points/s per freshness client")
    sizes.add_argument(
        "--fresh-seconds", type=positive_float, help="how long freshness clients log"
    )
    sizes.add_argument(
        "--flush-interval", type=positive_float, metavar="SECONDS", help="default 1.0"
    )
    sizes.add_argument(
        "--connections", type=positive_int, help="connections held (1000; quick 100)"
    )
    sizes.add_argument("--connection-procs", type=positive_int, help="processes holding them")
    sizes.add_argument(
        "--recovery-runs", type=positive_int, help="runs in the recovery section (20)"
    )
    sizes.add_argument("--recovery-points", type=positive_int, help="points of each (5000)")
    sizes.add_argument(
        "--recovery-kill-at", type=positive_float, help="share in MLflow at the SIGKILL (0.9)"
    )
    sizes.add_argument(
        "--job-start-clients", type=positive_int, help="clients starting at once (1000)"
    )
    sizes.add_argument(
        "--script-runs", type=positive_int, help="nested runs of script_wall's script (270)"
    )
    sizes.add_argument(
        "--script-reads",
        type=positive_int,
        help="points script_wall reads back (90)",
    )
    sizes.add_argument(
        "--script-rounds", type=positive_int, help="interleaved rounds of script_wall (3)"
    )
    sizes.add_argument(
        "--parallel-clients", type=positive_int, help="clients in parallel_flush (8)"
    )
    sizes.add_argument(
        "--parallel-workers", type=positive_int, help="flush writers in parallel_flush (4)"
    )
    sizes.add_argument("--linger-clients", type=positive_int, help="many clients in linger (1000)")
    sizes.add_argument("--linger-rate", type=positive_float, help="points/s of each of them (10)")
    sizes.add_argument(
        "--mlflow-workers",
        type=positive_int,
        help="mlflow server --workers for the benchmark's MLflow servers, on SQLite and on"
        " PostgreSQL (MLflow's own default: 4)",
    )
    args = p.parse_args(argv)
    if args.only == ():
        p.error(f"--only takes a comma-separated list of sections, of: {_SECTIONS_TEXT}")
    try:
        options = _options(args)
    except ValueError as exc:
        p.error(str(exc))
    if args.sweep:
        return run_sweep_bench(options, quick=args.quick)
    return run_bench(options, quick=args.quick)


def _options(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions.resolve(
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
        job_start_clients=args.job_start_clients,
        script_runs=args.script_runs,
        script_reads=args.script_reads,
        script_rounds=args.script_rounds,
        parallel_clients=args.parallel_clients,
        parallel_workers=args.parallel_workers,
        linger_clients=args.linger_clients,
        linger_rate=args.linger_rate,
        mlflow_workers=args.mlflow_workers,
        sections=args.only,
        json_path=args.json,
        png_path=args.png,
        work_dir=args.work_dir,
    )


if __name__ == "__main__":
    configure_logging()
    sys.exit(main())
