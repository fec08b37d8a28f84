"""Benchmark section ``job_start``: how long a job of many clients takes to start.

``job_start_clients`` clients (over a few processes, one connection each) publish their run's
start at once to one receiver embedded in the benchmark process, which writes to the
benchmark's ``mlflow server`` (SQLite). The clock runs from the command that starts the client
processes until every client run exists in MLflow (kept: no provisional tag left), counted in
MLflow's SQLite file so that the counting takes nothing from the server. A single client's
start is timed the same way first, for the run-by-run cost beside it. Both are measured with a
receiver that is alone (``serve --alone``: one MLflow call per run) and with one that may share
MLflow with other receivers (each run created provisional, then kept: two calls per run).
Beside them, MLflow's own ceiling: the same ``create_run`` calls (the tags a receiver gives a
client run) made straight from the benchmark on as many threads as a receiver uses, for
``min(job_start_clients, 200)`` runs, and the time a whole job's runs would take at that rate.
Section bulk measures the same start into a SQLite file with the bulk writer
(:func:`bulk_job_start`).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.mlflow_sections import wait_for_runs
from bench.procs import BenchError, Child, load_generator, mlflow_store, read_all
from bench.sections import BenchContext
from bridge.events import RunStart
from server.background import BackgroundReceiver
from server.config import ReceiverConfig
from server.flush.batch_creation import CREATION_THREADS
from server.flush.run_tags import client_run_tags
from server.flush.sink import RunRef

_CLIENTS_PER_PROC = 250
_TIMEOUT_S = 300.0
_CEILING_RUNS = 200


def job_start(ctx: BenchContext) -> dict[str, Any]:
    """A job's start with one client, then with ``job_start_clients`` at once: by a receiver
    that is alone (``serve --alone``), and by one that may share MLflow with others."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    figures: dict[str, Any] = {"clients": ctx.options.job_start_clients}
    for mode in ("alone", "shared"):
        config = ReceiverConfig(
            listen="127.0.0.1:0",
            data_dir=ctx.work_dir / f"receiver-job-start-{mode}",
            tracking_uri=ctx.mlflow_uri,
            flush_interval_s=ctx.options.flush_interval_s,
            shutdown_timeout_s=5.0,
            alone=mode == "alone",
        )
        background = BackgroundReceiver(config, owns_process=True)
        address = f"127.0.0.1:{background.start()}"
        try:
            one = _start(ctx, address, f"bench-start-one-{mode}", 1)
            many = _start(ctx, address, f"bench-start-{mode}", ctx.options.job_start_clients)
        finally:
            background.stop()
        figures[mode] = {
            "all_runs_s": many["all_runs_s"],
            "all_acked_s": many["all_acked_s"],
            "runs_per_s": ctx.options.job_start_clients / many["all_runs_s"],
            "one_run_s": one["all_runs_s"],
        }
    figures["mlflow"] = _mlflow_ceiling(ctx.mlflow_uri, ctx.options.job_start_clients)
    return figures


def bulk_job_start(ctx: BenchContext, tracking_uri: str, store: Path) -> dict[str, Any]:
    """A job's start of ``job_start_clients`` clients by a receiver alone writing MLflow's
    SQLite file ``store`` with the bulk writer (runs created in one transaction), beside
    MLflow's own ``create_run`` into the same database."""
    config = ReceiverConfig(
        listen="127.0.0.1:0",
        data_dir=ctx.work_dir / "receiver-job-start-bulk",
        tracking_uri=tracking_uri,
        flush_interval_s=ctx.options.flush_interval_s,
        shutdown_timeout_s=5.0,
        alone=True,
        bulk_write=True,
    )
    clients = ctx.options.job_start_clients
    background = BackgroundReceiver(config, owns_process=True)
    address = f"127.0.0.1:{background.start()}"
    try:
        many = _start(ctx, address, "bench-start-bulk", clients, store, at_once=True)
    finally:
        background.stop()
    return {
        "clients": clients,
        "all_runs_s": many["all_runs_s"],
        "all_acked_s": many["all_acked_s"],
        "runs_per_s": clients / many["all_runs_s"],
        "mlflow": _mlflow_ceiling(tracking_uri, clients),
    }


def _mlflow_ceiling(tracking_uri: str, clients: int) -> dict[str, float]:
    """MLflow's own rate of ``create_run`` calls, as a receiver makes them for a job's start."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    job = f"bench-start-mlflow-{uuid.uuid4().hex[:8]}"
    exp_id = client.create_experiment(job)
    parent = RunRef(client.create_run(exp_id, run_name=job).info.run_id, exp_id)
    runs = min(clients, _CEILING_RUNS)

    def create(i: int) -> None:
        tags = client_run_tags(f"c{i}", job, uuid.uuid4().hex, RunStart(), parent.run_id)
        client.create_run(exp_id, start_time=int(time.time() * 1000), tags=tags, run_name=f"c{i}")

    started = time.monotonic()
    with ThreadPoolExecutor(CREATION_THREADS) as pool:
        list(pool.map(create, range(runs)))
    rate = runs / (time.monotonic() - started)
    return {"runs": runs, "runs_per_s": rate, "job_s": clients / rate}


def _start(
    ctx: BenchContext,
    address: str,
    job: str,
    clients: int,
    store: Path | None = None,
    *,
    at_once: bool = False,
) -> dict[str, float]:
    procs = max(1, math.ceil(clients / _CLIENTS_PER_PROC))
    counts = [len(range(i, clients, procs)) for i in range(procs)]
    started = time.monotonic()
    gens = [
        load_generator(
            ctx.procs,
            f"load-{job}-{i}",
            "conns",
            *("--receiver", address, "--job", job, "--prefix", f"{job}-{i}"),
            *("--count", str(n)),
            *(("--at-once",) if at_once else ()),
        )
        for i, n in enumerate(counts)
    ]
    try:
        readies = read_all(gens, _TIMEOUT_S)
        acked_s = time.monotonic() - started
        if sum(r["connected"] for r in readies) < clients:
            raise BenchError(f"only {sum(r['connected'] for r in readies)} of {clients} started")
        where = store or mlflow_store(ctx.work_dir)
        wait_for_runs(where, job, clients, timeout_s=_TIMEOUT_S)
        runs_s = time.monotonic() - started
    finally:
        _stop(ctx, gens)
    return {"all_runs_s": runs_s, "all_acked_s": acked_s}


def _stop(ctx: BenchContext, gens: list[Child]) -> None:
    for gen in gens:
        ctx.procs.stop(gen)
