"""Benchmark sections that end in a real MLflow server: end to end, and freshness.

Both run against a receiver embedded in the benchmark process, whose flush counters tell when
everything has been written; MLflow itself is then read to check what it holds.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric as MlflowMetric
from mlflow.tracking import MlflowClient

from bench.live import LiveWatcher
from bench.postgres import Postgres
from bench.procs import BenchError, Child, load_generator, mlflow_store, read_all, wait_until
from bench.report import summarize_ns
from bench.sections import BenchContext
from server.flush.run_creation import TAG_PROVISIONAL
from server.flush.run_tags import TAG_ROLE
from server.receiver import Receiver

_READY_TIMEOUT_S = 120.0
_E2E_KEY = "bench/e2e"
_FRESH_KEY = "bench/fresh"
_CLIENTS_PER_FRESH_PROC = 25
_STORE_POLL_S = 0.02
_PARALLEL_WRITERS = 2
_CEILING_TIMEOUT_S = 600.0
_CLIENT_RUNS = f"tags.`{TAG_ROLE}` = 'client'"

_logger = logging.getLogger(__name__)


def log_batch_ceiling(uri: str, events: int, writers: int = 1) -> dict[str, Any]:
    """MLflow's own ingest rate: ``MlflowClient.log_batch`` of 1000 metrics, one call after
    another, by ``writers`` threads each writing its own run at the same time."""
    client = MlflowClient(uri)
    exp_id = client.create_experiment(f"bench-ceiling-{time.time_ns()}")
    share = max(1000, events // writers)
    run_ids = [client.create_run(exp_id).info.run_id for _ in range(writers)]
    now_ms = time.time_ns() // 1_000_000
    points = [MlflowMetric("bench/ceiling", float(i), now_ms, i) for i in range(share)]
    chunks = [points[i : i + 1000] for i in range(0, share, 1000)]

    def write(run_id: str) -> None:
        own = MlflowClient(uri)
        for chunk in chunks:
            own.log_batch(run_id, metrics=chunk, synchronous=True)

    threads = [threading.Thread(target=write, args=(run_id,)) for run_id in run_ids]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + _CEILING_TIMEOUT_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise BenchError(f"log_batch did not finish within {_CEILING_TIMEOUT_S:.0f} s")
    elapsed = time.perf_counter() - started
    for run_id in run_ids:
        client.set_terminated(run_id)
    total = share * writers
    return {
        "events": total,
        "calls": len(chunks) * writers,
        "seconds": elapsed,
        "events_per_s": total / elapsed,
    }


def _wait_until(done: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Polls ``done`` every 10 ms; returns the wall time it first held."""
    wait_until(done, what, timeout_s)
    return time.time()


def _experiment_id(client: MlflowClient, job: str, timeout_s: float = 60.0) -> str:
    """The id of a job's experiment, waiting for the receiver's first flush to create it."""
    exp = wait_until(
        lambda: client.get_experiment_by_name(job),
        f"the receiver creating experiment {job!r}", timeout_s, poll_s=0.1,
    )  # fmt: skip
    exp_id: str = exp.experiment_id
    return exp_id


def _client_runs(client: MlflowClient, job: str) -> list[Any]:
    runs: list[Any] = client.search_runs(
        [_experiment_id(client, job)], _CLIENT_RUNS, max_results=10_000
    )
    return runs


def wait_for_runs(store: Path, job: str, count: int, timeout_s: float = 60.0) -> None:
    """Waits until the receiver has created every client's run, so that run creation (which
    the log_batch ceiling does not time either) stays out of the measurement.

    It counts them in MLflow's SQLite file: asking the single-worker server for a thousand
    runs ten times a second would take the server away from the receiver creating them.
    """
    query = (
        "SELECT COUNT(*) FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id"
        " JOIN tags t ON t.run_uuid = r.run_uuid"
        " WHERE e.name = ? AND r.lifecycle_stage = 'active' AND t.key = ? AND t.value = 'client'"
        " AND NOT EXISTS (SELECT 1 FROM tags p WHERE p.run_uuid = r.run_uuid AND p.key = ?)"
    )
    deadline = time.monotonic() + timeout_s
    conn = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        while conn.execute(query, (job, TAG_ROLE, TAG_PROVISIONAL)).fetchone()[0] < count:
            if time.monotonic() > deadline:
                raise BenchError(f"the receiver did not create {count} runs for {job!r}")
            time.sleep(0.2)
    finally:
        conn.close()


def end_to_end(ctx: BenchContext, receiver: Receiver, address: str) -> dict[str, Any]:
    """Events/s that land in MLflow through the bridge, next to log_batch's own ceiling.

    The ceiling is timed in two halves, before and after the bridge, so that a drift of the
    machine's speed during the run weighs on both sides alike.
    """
    opts = ctx.options
    per_client = max(1, opts.events // opts.e2e_clients)
    total = per_client * opts.e2e_clients
    ceiling = [log_batch_ceiling(ctx.mlflow_uri, total // 2)]
    bridge = _bridge_into_mlflow(ctx, receiver, address, per_client)
    ceiling.append(log_batch_ceiling(ctx.mlflow_uri, total - total // 2))
    ceiling_s = sum(c["seconds"] for c in ceiling)
    ceiling_rate = sum(c["events"] for c in ceiling) / ceiling_s
    # Would flushing several runs at once pay? Only if MLflow serves parallel writers faster.
    parallel = log_batch_ceiling(ctx.mlflow_uri, total // 2, writers=_PARALLEL_WRITERS)
    return {
        "clients": opts.e2e_clients,
        "events": total,
        "flush_interval_s": opts.flush_interval_s,
        **bridge,
        "bridge_events_per_s": total / bridge["bridge_seconds"],
        "mlflow_log_batch_events_per_s": ceiling_rate,
        "mlflow_log_batch_seconds": ceiling_s,
        "mlflow_log_batch_calls": sum(c["calls"] for c in ceiling),
        "mlflow_parallel_writers": _PARALLEL_WRITERS,
        "mlflow_parallel_events_per_s": parallel["events_per_s"],
        "ratio": total / bridge["bridge_seconds"] / ceiling_rate,
    }


def _bridge_into_mlflow(
    ctx: BenchContext, receiver: Receiver, address: str, per_client: int
) -> dict[str, Any]:
    """Clients log ``per_client`` points each; timed from their first call until the receiver
    has written the last one to MLflow, then counted in MLflow."""
    clients = ctx.options.e2e_clients
    job = "bench-e2e"
    stats = receiver.flusher.stats
    flushed_before = stats.events_flushed
    gens = [
        load_generator(
            ctx.procs,
            f"load-e2e-{i}",
            "e2e",
            *("--receiver", address, "--job", job),
            *("--prefix", f"e2e-{i}", "--points", str(per_client)),
        )
        for i in range(clients)
    ]
    read_all(gens, _READY_TIMEOUT_S)
    client = MlflowClient(ctx.mlflow_uri)
    wait_for_runs(mlflow_store(ctx.work_dir), job, clients)
    # Runs are created and their start events flushed before the clock starts, as the
    # ceiling's run is: what is timed is the points.
    _wait_until(lambda: stats.events_flushed >= flushed_before + clients, 60, "run starts")
    target = flushed_before + clients * (per_client + 1)
    calls_before = stats.log_batch_calls
    for gen in gens:
        gen.send("go")
    landed = _wait_until(
        lambda: stats.events_flushed >= target, _READY_TIMEOUT_S * 5, "end-to-end flush"
    )
    calls = stats.log_batch_calls - calls_before
    results = read_all(gens, _READY_TIMEOUT_S)
    _stop_all(ctx, gens)
    stored = sum(
        len(client.get_metric_history(run.info.run_id, _E2E_KEY))
        for run in _client_runs(client, job)
    )
    return {
        "bridge_seconds": landed - min(r["start"] for r in results),
        "log_batch_calls": calls,
        "points_in_mlflow": stored,
        "undelivered": sum(r["undelivered"] for r in results),
    }


def _stop_all(ctx: BenchContext, gens: list[Child]) -> None:
    for gen in gens:
        ctx.procs.stop(gen)


class _Visibility:
    """When each run's latest point was first readable in MLflow, read from its own store.

    Reading MLflow's SQLite file (table ``latest_metrics``) every 20 ms adds no load to the
    single-worker server; polling its REST API that often would take a good share of it.
    """

    def __init__(self, store: Path) -> None:
        self._conn = sqlite3.connect(f"{store.as_uri()}?mode=ro", uri=True, timeout=5.0)
        self.seen: dict[str, list[tuple[int, float]]] = {}
        self.polls = 0

    def _rows(self) -> list[tuple[str, int]]:
        rows: list[tuple[str, int]] = self._conn.execute(
            "SELECT run_uuid, step FROM latest_metrics WHERE key = ?", (_FRESH_KEY,)
        ).fetchall()
        return rows

    def poll(self) -> None:
        rows = self._rows()
        now = time.time()
        self.polls += 1
        for run_id, step in rows:
            marks = self.seen.setdefault(run_id, [])
            if not marks or step > marks[-1][0]:
                marks.append((step, now))

    def complete(self, runs: int, last_step: int) -> bool:
        return len(self.seen) >= runs and all(m[-1][0] >= last_step for m in self.seen.values())

    def first_seen(self, run_id: str, step: int) -> float | None:
        for seen_step, at in self.seen.get(run_id, []):
            if seen_step >= step:
                return at
        return None

    def close(self) -> None:
        self._conn.close()


SqliteVisibility = _Visibility
"""When points become readable in an MLflow SQLite file (bench/bulk.py)."""


class PgVisibility(_Visibility):
    """The same, read from MLflow's PostgreSQL database (bench/parallel_flush.py)."""

    def __init__(self, pg: Postgres) -> None:
        import psycopg2

        self._pg = psycopg2.connect(
            host="127.0.0.1", port=pg.port, user="postgres", password=pg.password, dbname="mlflow"
        )
        self._pg.autocommit = True
        self.seen = {}
        self.polls = 0

    def _rows(self) -> list[tuple[str, int]]:
        with self._pg.cursor() as cur:
            cur.execute("SELECT run_uuid, step FROM latest_metrics WHERE key = %s", (_FRESH_KEY,))
            return [(str(r[0]), int(r[1])) for r in cur.fetchall()]

    def close(self) -> None:
        self._pg.close()


def freshness(
    ctx: BenchContext,
    receiver: Receiver,
    address: str,
    *,
    uri: str = "",
    store: Callable[[], _Visibility] | None = None,
) -> dict[str, Any]:
    """Time from a log call to the point being readable from MLflow, at a steady rate (by
    default on the benchmark's SQLite MLflow; ``uri`` and ``store`` name another)."""
    opts = ctx.options
    job = "bench-fresh"
    procs = math.ceil(opts.fresh_clients / _CLIENTS_PER_FRESH_PROC)
    counts = [len(range(i, opts.fresh_clients, procs)) for i in range(procs)]
    gens = [
        load_generator(
            ctx.procs,
            f"load-fresh-{i}",
            "fresh",
            *("--receiver", address, "--job", job, "--prefix", f"fresh-{i}"),
            *("--clients", str(n), "--rate", str(opts.fresh_rate), "--seconds", str(opts.fresh_s)),
        )
        for i, n in enumerate(counts)
    ]
    flushed_before = receiver.flusher.stats.events_flushed
    read_all(gens, _READY_TIMEOUT_S)
    client = MlflowClient(uri or ctx.mlflow_uri)
    if store is None:
        wait_for_runs(
            mlflow_store(ctx.work_dir), job, opts.fresh_clients, timeout_s=60 + opts.fresh_clients
        )
    else:  # every run made and its start written
        _wait_until(
            lambda: receiver.flusher.stats.events_flushed >= flushed_before + opts.fresh_clients,
            60 + opts.fresh_clients,
            "the run starts",
        )
    calls_before = receiver.flusher.stats.log_batch_calls
    ticks = max(1, round(opts.fresh_rate * opts.fresh_s))
    budget_s = opts.fresh_s + opts.flush_interval_s + _READY_TIMEOUT_S
    seen = _Visibility(mlflow_store(ctx.work_dir)) if store is None else store()
    live = LiveWatcher(address, job, _FRESH_KEY, budget_s)
    try:
        for gen in gens:
            gen.send("go")
        deadline = time.monotonic() + budget_s
        while not seen.complete(opts.fresh_clients, ticks - 1) and time.monotonic() < deadline:
            seen.poll()
            time.sleep(_STORE_POLL_S)
    finally:
        seen.close()
        live.close()
    calls = receiver.flusher.stats.log_batch_calls - calls_before
    results = read_all(gens, _READY_TIMEOUT_S)
    _stop_all(ctx, gens)
    lag = summarize_ns(_lags_ns(client, seen))
    live_lag = summarize_ns(live.lags_ns)
    expected = opts.fresh_clients * ticks
    return {
        "clients": opts.fresh_clients,
        "rate_per_client": opts.fresh_rate,
        "events_per_s": opts.fresh_clients * opts.fresh_rate,
        "seconds": opts.fresh_s,
        "flush_interval_s": opts.flush_interval_s,
        "points": lag["calls"],
        "missing": expected - lag["calls"],
        "p50_ms": lag["p50_us"] / 1000,
        "p99_ms": lag["p99_us"] / 1000,
        "max_ms": lag["max_us"] / 1000,
        "poll_ms": _STORE_POLL_S * 1000,
        "log_batch_calls": calls,
        "metrics_per_log_batch": expected / max(1, calls),
        "late_ticks": sum(r["late_ticks"] for r in results),
        "live_points": live_lag["calls"],
        "live_p50_ms": live_lag["p50_us"] / 1000,
        "live_p99_ms": live_lag["p99_us"] / 1000,
        "live_events_dropped": live.events_dropped,
        "live_error": live.error,
    }


def _lags_ns(client: MlflowClient, seen: _Visibility) -> list[int]:
    """Each point's wait from its log call (its MLflow timestamp) to the poll that saw it."""
    lags = []
    for run_id in seen.seen:
        for point in client.get_metric_history(run_id, _FRESH_KEY):
            at = seen.first_seen(run_id, point.step)
            if at is not None:
                lags.append(int((at - point.timestamp / 1000) * 1e9))
    return lags
