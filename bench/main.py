"""``trackbridge bench``: the project's performance figures beside direct MLflow, in one run.

It starts everything it measures on loopback: an ``mlflow server --workers 1`` on a fresh SQLite
file, receivers (``trackbridge serve`` processes where their memory is measured, one embedded
receiver for the sections that end in MLflow) and client processes. Every child is ended on
exit, SIGTERM and Ctrl-C included, and every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.config import BenchOptions
from bench.procs import (
    Processes,
    ReceiverProcess,
    free_port,
    start_mlflow_server,
    start_receiver,
    wait_http,
    wait_receiver,
)
from bench.report import Results, check_targets, format_table, write_json
from bench.sections import BenchContext

_logger = logging.getLogger(__name__)

# Receivers that must not flush: a long interval and an MLflow address nothing listens on;
# and no backpressure, since what they measure is ingest, not the backlog limit.
_NO_FLUSH_INTERVAL_S = 3600.0
_NO_BACKLOG_LIMIT = 10**12


def _machine() -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "-"

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mlflow": version("mlflow"),
        "grpcio": version("grpcio"),
        "protobuf": version("protobuf"),
    }


def _attempt(name: str, measure: Callable[[], Results]) -> Results:
    """Runs one section; a failure is reported in its place and the run goes on."""
    _logger.info("bench: %s ...", name)
    started = time.monotonic()
    try:
        figures = measure()
    except Exception as exc:
        _logger.exception("bench: %s failed", name)
        return {"error": f"{type(exc).__name__}: {exc}"}
    _logger.info("bench: %s done in %.1f s", name, time.monotonic() - started)
    return figures


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turns SIGTERM into SystemExit so that the children are ended on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _work_dir(options: BenchOptions) -> Iterator[Path]:
    if options.work_dir is not None:
        options.work_dir.mkdir(parents=True, exist_ok=True)
        yield options.work_dir.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="trackbridge-bench-") as tmp:
        yield Path(tmp)


def _start_quiet_receiver(ctx: BenchContext, name: str) -> Callable[[], ReceiverProcess]:
    """Starts a receiver whose flusher cannot reach MLflow; returns a wait for it to serve."""
    data_dir = ctx.work_dir / name
    dead_uri = f"http://127.0.0.1:{free_port()}"
    child = start_receiver(
        ctx.procs,
        name,
        data_dir,
        dead_uri,
        flush_interval_s=_NO_FLUSH_INTERVAL_S,
        fsync=ctx.options.fsync,
        max_backlog_events=_NO_BACKLOG_LIMIT,
    )
    return lambda: wait_receiver(child, data_dir)


def _measure(ctx: BenchContext, results: Results) -> None:
    """Starts the servers together, then measures one section at a time."""
    from bench import sections

    wanted = set(ctx.options.sections)
    time_mlflow = "latency" in wanted and ctx.options.writer_rate is None
    mlflow_child, uri = (None, "")
    if time_mlflow or wanted & {
        "end_to_end",
        "freshness",
        "recovery",
        "aggregate",
        "job_start",
        "parallel_flush",
        "fleet_queue",
        "script_wall",
    }:
        workers = ctx.options.mlflow_workers
        mlflow_child, uri = start_mlflow_server(ctx.procs, ctx.work_dir, workers)
        ctx = dataclasses.replace(ctx, mlflow_uri=uri, mlflow_pid=mlflow_child.pid)
    waits = {}
    if wanted & {"latency", "ingest", "system_metrics"}:
        waits["ingest"] = _start_quiet_receiver(ctx, "receiver-ingest")
    if "scale" in wanted:
        waits["scale"] = _start_quiet_receiver(ctx, "receiver-scale")
    receivers = {name: wait() for name, wait in waits.items()}
    if mlflow_child is not None:
        wait_http(mlflow_child, uri)

    if "ingest" in receivers:
        _measure_client_side(ctx, results, receivers["ingest"])
    if "scale" in receivers:
        scale_rx = receivers["scale"]
        results["scale"] = _attempt("scale", lambda: sections.scale(ctx, scale_rx))
        ctx.procs.stop(scale_rx.child)
    if time_mlflow and "error" not in results["latency"]:
        direct = _attempt("latency (MLflow)", lambda: sections.direct_latency(ctx))
        results["latency"].update(direct if "error" not in direct else {"error": direct["error"]})
    if wanted & {"end_to_end", "freshness"}:
        _measure_into_mlflow(ctx, results)
    if "recovery" in wanted:
        from bench.recovery import recovery

        results["recovery"] = _attempt("recovery", lambda: recovery(ctx))
    if "aggregate" in wanted:
        from bench.aggregates import aggregate_latency

        results["aggregate"] = _attempt("aggregate", lambda: aggregate_latency(ctx))
    _measure_fleet(ctx, results)


def _measure_fleet(ctx: BenchContext, results: Results) -> None:
    """The fleet-scale sections: job start, parallel flushing, the writer's linger, the queue
    backends."""
    from bench.bulk import bulk
    from bench.fleet_queue import fleet_queue
    from bench.job_start import job_start
    from bench.linger import linger
    from bench.parallel_flush import parallel_flush
    from bench.script_wall import script_wall

    fleet: dict[str, Callable[[BenchContext], Results]] = {
        "job_start": job_start,
        "parallel_flush": parallel_flush,
        "linger": linger,
        "fleet_queue": fleet_queue,
        "script_wall": script_wall,
        "bulk": bulk,
    }
    for name, section in fleet.items():
        if name in ctx.options.sections:
            results[name] = _attempt(name.replace("_", " "), functools.partial(section, ctx))


def _measure_client_side(ctx: BenchContext, results: Results, rx: ReceiverProcess) -> None:
    """The Writer's call cost, then ingest, against one receiver that never flushes."""
    from bench import sections

    if "latency" in ctx.options.sections:
        writer = _attempt("latency (Writer)", lambda: sections.writer_latency(ctx, rx))
        results["latency"] = {"writer": writer} if "error" not in writer else writer
    if "ingest" in ctx.options.sections:
        results["ingest"] = _attempt("ingest", lambda: sections.ingest(ctx, rx))
    if "system_metrics" in ctx.options.sections:
        from bench.system_metrics import section

        results["system_metrics"] = _attempt("system metrics", lambda: section(ctx, rx))
    ctx.procs.stop(rx.child)


def _measure_into_mlflow(ctx: BenchContext, results: Results) -> None:
    from bench import mlflow_sections as bench_mlflow
    from server.background import BackgroundReceiver
    from server.config import ReceiverConfig

    # The receiver's MLflow client would print a link to every run it ends.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    config = ReceiverConfig(
        listen="127.0.0.1:0",
        data_dir=ctx.work_dir / "receiver-mlflow",
        tracking_uri=ctx.mlflow_uri,
        flush_interval_s=ctx.options.flush_interval_s,
        shutdown_timeout_s=5.0,
    )
    background = BackgroundReceiver(config, owns_process=True)
    try:
        address = f"127.0.0.1:{background.start()}"
    except Exception as exc:
        _logger.exception("bench: the embedded receiver did not start")
        with contextlib.suppress(Exception):
            background.stop()
        for name in {"end_to_end", "freshness"} & set(ctx.options.sections):
            results[name] = {"error": f"receiver did not start: {type(exc).__name__}: {exc}"}
        return
    try:
        if "end_to_end" in ctx.options.sections:
            results["end_to_end"] = _attempt(
                "end to end", lambda: bench_mlflow.end_to_end(ctx, background.receiver, address)
            )
        if "freshness" in ctx.options.sections:
            results["freshness"] = _attempt(
                "freshness", lambda: bench_mlflow.freshness(ctx, background.receiver, address)
            )
    finally:
        background.stop()


def run_bench(options: BenchOptions, *, quick: bool = False) -> int:
    """Runs the benchmark, prints the table, writes JSON (and a PNG); returns the exit code."""
    started = time.monotonic()
    results: Results = {
        "quick": quick,
        "machine": _machine(),
        "options": dataclasses.asdict(options),
    }
    with contextlib.ExitStack() as stack:
        stack.enter_context(_sigterm_unwinds())
        work_dir = stack.enter_context(_work_dir(options))
        procs = Processes(work_dir)
        stack.callback(procs.stop_all)
        try:
            _measure(BenchContext(options, procs, work_dir), results)
        except Exception as exc:  # a server that would not start: report it like a section
            _logger.exception("bench: setup failed")
            results["setup"] = {"error": f"{type(exc).__name__}: {exc}"}
    results["duration_s"] = time.monotonic() - started
    results["targets"] = check_targets(results)
    write_json(results, options.json_path)
    print(format_table(results))
    print(f"results written to {options.json_path}")
    if options.png_path is not None:
        from bench.chart import draw_png

        if draw_png(results, options.png_path):
            print(f"chart drawn at {options.png_path}")
    failed = [name for name, s in results.items() if isinstance(s, dict) and "error" in s]
    if failed:
        print(f"bench: sections failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def run_sweep_bench(options: BenchOptions, *, quick: bool = False) -> int:
    """Runs ``--sweep``: every point of bench/sweep.py; prints its table, writes JSON."""
    from bench.sweep import format_sweep, run_sweep

    with contextlib.ExitStack() as stack:
        stack.enter_context(_sigterm_unwinds())
        work_dir = stack.enter_context(_work_dir(options))
        procs = Processes(work_dir)
        stack.callback(procs.stop_all)

        def measure(point: BenchOptions, point_dir: Path, results: Results) -> None:
            try:
                _measure(BenchContext(point, procs, point_dir), results)
            finally:
                procs.stop_all()

        sweep = run_sweep(options, measure, work_dir, quick=quick)
    sweep["machine"] = _machine()
    write_json(sweep, options.json_path)
    print(format_sweep(sweep["rows"]))
    print(f"results written to {options.json_path}")
    failed = [row for row in sweep["rows"] if "error" in row["figures"]]
    return 1 if failed else 0
