"""Benchmark section ``parallel_flush``: end to end into MLflow with several flush writers, on
MLflow's SQLite store and on PostgreSQL, beside one ``log_batch`` writer's ceiling.

Two MLflow servers: the benchmark's own (SQLite, ``--workers 1``) and one on a PostgreSQL
cluster this section starts (bench/postgres.py) with ``--workers 4``, the deployment the docs
recommends at scale. On each, MLflow's own ingest rate is timed first: one thread calling
``log_batch`` with 1000 metrics, one call after another. Then ``parallel_clients`` clients log
through a receiver embedded in the benchmark process, once with one flush writer and once with
``parallel_workers``; the clock runs from their first call until the receiver has written the
last point, and MLflow is counted afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from mlflow.tracking import MlflowClient

from bench.mlflow_sections import PgVisibility, freshness, log_batch_ceiling
from bench.postgres import Postgres, create_database, start_postgres, stop_postgres
from bench.procs import (
    Child,
    free_port,
    load_generator,
    read_all,
    wait_http,
    wait_until,
)
from bench.sections import BenchContext
from server.background import BackgroundReceiver
from server.config import ReceiverConfig
from server.fleet.config import FleetConfig
from server.flush.run_tags import TAG_ROLE

_logger = logging.getLogger(__name__)

_KEY = "bench/e2e"
_TIMEOUT_S = 600.0
_PG_WORKERS = 4


@contextlib.contextmanager
def postgres_mlflow(ctx: BenchContext) -> Iterator[tuple[str, Postgres]]:
    """A fresh PostgreSQL cluster and ``mlflow server --workers 4`` on it (``--mlflow-workers``
    when given, as for the SQLite one); yields its URI and the cluster."""
    pg = start_postgres()
    try:
        create_database(pg, "mlflow")
        port = free_port()
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--workers", str(ctx.options.mlflow_workers or _PG_WORKERS),
            "--backend-store-uri", pg.uri("mlflow"),
            "--default-artifact-root", (ctx.work_dir / "mlflow-pg-artifacts").resolve().as_uri(),
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        child = ctx.procs.start("mlflow-server-pg", argv, env=env)
        uri = f"http://127.0.0.1:{port}"
        try:
            wait_http(child, uri)
            yield uri, pg
        finally:
            ctx.procs.stop(child)
    finally:
        stop_postgres(pg)


def parallel_flush(ctx: BenchContext) -> dict[str, Any]:
    """The figures on SQLite, then on PostgreSQL."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    figures: dict[str, Any] = {
        "clients": ctx.options.parallel_clients,
        "workers": ctx.options.parallel_workers,
        "sqlite": _on(ctx, ctx.mlflow_uri, "sqlite"),
    }
    with postgres_mlflow(ctx) as (uri, pg):
        figures["postgres"] = _on(ctx, uri, "postgres")
        figures["postgres_freshness"] = freshness_with_writers(
            ctx, uri, "parallel", lambda: PgVisibility(pg)
        )
    return figures


def freshness_with_writers(
    ctx: BenchContext, uri: str, name: str, visibility: Callable[[], Any]
) -> dict[str, Any]:
    """Section freshness's measurement into ``uri`` by a receiver with the flush writers
    (``visibility`` makes the store probe that sees when a point is in MLflow)."""
    config = ReceiverConfig(
        listen="127.0.0.1:0",
        data_dir=ctx.work_dir / f"receiver-{name}-freshness",
        tracking_uri=uri,
        flush_interval_s=ctx.options.flush_interval_s,
        shutdown_timeout_s=5.0,
        flush_workers=ctx.options.parallel_workers,
        alone=True,
    )
    background = BackgroundReceiver(config, owns_process=True)
    address = f"127.0.0.1:{background.start()}"
    try:
        return freshness(ctx, background.receiver, address, uri=uri, store=visibility)
    finally:
        background.stop()


def _on(ctx: BenchContext, uri: str, store: str) -> dict[str, Any]:
    opts = ctx.options
    per_client = max(1000, opts.events // opts.parallel_clients)
    total = per_client * opts.parallel_clients
    ceiling = log_batch_ceiling(uri, total)
    out: dict[str, Any] = {"events": total, "log_batch_events_per_s": ceiling["events_per_s"]}
    for workers in dict.fromkeys((1, opts.parallel_workers)):
        took = through_bridge(ctx, uri, f"{store}-{workers}", workers, per_client)
        out[f"bridge_{workers}_events_per_s"] = total / took["seconds"]
        out[f"bridge_{workers}_points_in_mlflow"] = took["points_in_mlflow"]
    best = out[f"bridge_{opts.parallel_workers}_events_per_s"]
    out["ratio"] = best / ceiling["events_per_s"]
    return out


def through_bridge(
    ctx: BenchContext,
    uri: str,
    name: str,
    workers: int,
    per_client: int,
    *,
    fleet: FleetConfig | None = None,
    bulk_write: bool = True,
    database_cpu: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """``parallel_clients`` clients log ``per_client`` points each through one receiver with
    ``workers`` flush writers (on a JetStream queue with ``fleet``; with the bulk writer on a
    database URI unless ``bulk_write`` is False); returns the seconds from
    their first call until the receiver wrote the last point, and the points found in MLflow.

    Also the CPU seconds each part used meanwhile (``cpu_s``): the clients (from their first
    call until their last point was acknowledged), the benchmark's process (the receiver,
    SQLite's store with it) and, with ``database_cpu`` (its CPU seconds so far), the database."""
    clients = ctx.options.parallel_clients
    job = f"bench-parallel-{name}"
    config = ReceiverConfig(
        listen="127.0.0.1:0",
        data_dir=ctx.work_dir / f"receiver-parallel-{name}",
        tracking_uri=uri,
        flush_interval_s=ctx.options.flush_interval_s,
        shutdown_timeout_s=5.0,
        flush_workers=workers,
        alone=fleet is None,  # a fleet shares MLflow (serve refuses --alone with --queue)
        fleet=fleet,
        bulk_write=bulk_write,
    )
    background = BackgroundReceiver(config, owns_process=True)
    address = f"127.0.0.1:{background.start()}"
    gens: list[Child] = []
    try:
        stats = background.receiver.flusher.stats
        gens = [
            load_generator(
                ctx.procs,
                f"load-{job}-{i}",
                "e2e",
                *("--receiver", address, "--job", job),
                *("--prefix", f"{job}-{i}", "--points", str(per_client)),
                *("--flush-timeout", str(_TIMEOUT_S)),
            )
            for i in range(clients)
        ]
        read_all(gens, _TIMEOUT_S)
        # The runs exist and their starts are written before the clock starts, as the
        # ceiling's run is: what is timed is the points.
        _until(lambda: stats.events_flushed >= clients, "the run starts")
        receiver_cpu = time.process_time()
        database_before = database_cpu() if database_cpu is not None else 0.0
        for gen in gens:
            gen.send("go")
        target = clients * (per_client + 1)
        landed = _until(lambda: stats.events_flushed >= target, "the flush")
        cpu = {"receiver": time.process_time() - receiver_cpu}
        if database_cpu is not None:
            cpu["database"] = database_cpu() - database_before
        results = read_all(gens, _TIMEOUT_S)
    finally:
        for gen in gens:
            ctx.procs.stop(gen)
        background.stop()
    return {
        "seconds": landed - min(r["start"] for r in results),
        "acked_s": max(r["acked"] for r in results) - min(r["start"] for r in results),
        "points_in_mlflow": _points(uri, job),
        "cpu_s": {"clients": sum(r.get("cpu_s", 0.0) for r in results), **cpu},
    }


def _until(done: Callable[[], bool], what: str) -> float:
    """When ``done`` came true (``time.time()``)."""
    wait_until(done, what, _TIMEOUT_S)
    return time.time()


def _points(uri: str, job: str) -> int:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(job)
    if experiment is None:
        return 0
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{TAG_ROLE}` = 'client'", max_results=1000
    )
    return sum(len(client.get_metric_history(r.info.run_id, _KEY)) for r in runs)
