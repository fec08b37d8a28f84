"""Benchmark section ``bulk``: the receiver writing a database-backed MLflow with the bulk writer
(server/flush/bulk/), beside MLflow's own ``log_batch`` ceiling on the same database.

On a SQLite file and on a PostgreSQL cluster this section starts (bench/postgres.py), one after
the other, all in one run:

- MLflow's ceiling: ``MlflowClient(<database URI>).log_batch`` of 1000 metrics, one call after
  another (MLflow's SQL store in the benchmark process, no server in between);
- the physical limit: the same rows as plain inserts through the database driver into MLflow's
  ``metrics`` table, plus the latest point replaced, one transaction per 1000 (no validation,
  no run check, no SQLAlchemy); and the bulk writer alone on the same calls;
- end to end: ``parallel_clients`` client processes log ``events`` points through a receiver
  embedded in the benchmark process that writes the database with the bulk writer, then with
  MLflow's store (``--no-bulk-write``); timed from their first call until the receiver wrote the
  last point; MLflow is counted afterwards. Beside it, the CPU seconds each part used in that
  window (the clients, the receiver, PostgreSQL's processes) and what they allow on this
  machine's cores: the fastest the run could be were every core busy all along;
- freshness with the bulk writer: ``fresh_clients`` clients at ``fresh_rate`` points/s each,
  the p99 time from a log call until MLflow's database holds the point;
- a job's start on SQLite: ``job_start_clients`` clients start their runs at once through a
  receiver alone with the bulk writer, until every run is in the database, beside MLflow's own
  ``create_run`` into the same file (bench/job_start.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from bench import mlflow_sections
from bench.job_start import bulk_job_start
from bench.mlflow_sections import PgVisibility, log_batch_ceiling
from bench.parallel_flush import freshness_with_writers, through_bridge
from bench.postgres import Postgres, cluster_cpu_s, create_database, start_postgres, stop_postgres
from bench.sections import BenchContext
from server.flush.bulk import BulkWriter
from server.flush.bulk.writer import create_engine

_CALL = 1000


def bulk(ctx: BenchContext) -> dict[str, Any]:
    """The figures on SQLite, then on PostgreSQL."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    sqlite_file = (ctx.work_dir / "bulk-mlflow.db").resolve()
    figures: dict[str, Any] = {
        "clients": ctx.options.parallel_clients,
        "workers": ctx.options.parallel_workers,
        "sqlite": _on(ctx, f"sqlite:///{sqlite_file}", "sqlite"),
    }
    figures["sqlite_freshness"] = freshness_with_writers(
        ctx, f"sqlite:///{sqlite_file}", "bulk-sqlite",
        lambda: mlflow_sections.SqliteVisibility(sqlite_file),
    )  # fmt: skip
    figures["sqlite_job_start"] = bulk_job_start(ctx, f"sqlite:///{sqlite_file}", sqlite_file)
    pg = start_postgres()
    try:
        create_database(pg, "mlflow")  # the name PgVisibility reads
        figures["postgres"] = _on(ctx, pg.uri("mlflow"), "postgres", pg)
        figures["postgres_freshness"] = freshness_with_writers(
            ctx, pg.uri("mlflow"), "bulk-postgres", lambda: PgVisibility(pg)
        )
    finally:
        stop_postgres(pg)
    return figures


def _on(ctx: BenchContext, uri: str, store: str, pg: Postgres | None = None) -> dict[str, Any]:
    opts = ctx.options
    per_client = max(_CALL, opts.events // opts.parallel_clients)
    total = per_client * opts.parallel_clients
    MlflowClient(uri).search_experiments(max_results=1)  # MLflow makes its tables
    ceiling = log_batch_ceiling(uri, total)
    out: dict[str, Any] = {
        "events": total,
        "log_batch_events_per_s": ceiling["events_per_s"],
        "inserts_alone_events_per_s": _inserts_alone(uri, total),
        "writer_alone_events_per_s": _writer_alone(uri, total),
    }
    workers = opts.parallel_workers
    database_cpu = (lambda: cluster_cpu_s(pg)) if pg is not None else None
    for mode, on in (("bulk", True), ("mlflow_store", False)):
        took = through_bridge(
            ctx, uri, f"{store}-{mode}", workers, per_client, bulk_write=on,
            database_cpu=database_cpu,
        )  # fmt: skip
        out[f"bridge_{mode}_events_per_s"] = total / took["seconds"]
        out[f"bridge_{mode}_points_in_mlflow"] = took["points_in_mlflow"]
        out[f"bridge_{mode}_at_receiver_s"] = took["acked_s"]  # every point acknowledged
        out[f"bridge_{mode}_cpu_s"] = took["cpu_s"]
    out["cores"] = os.cpu_count() or 1
    out["ratio"] = out["bridge_bulk_events_per_s"] / ceiling["events_per_s"]
    out["physical_ratio"] = out["bridge_bulk_events_per_s"] / out["inserts_alone_events_per_s"]
    return out


def _new_run(uri: str, name: str) -> str:
    client = MlflowClient(uri)
    exp_id = client.create_experiment(f"bench-{name}-{time.time_ns()}")
    run_id: str = client.create_run(exp_id).info.run_id
    return run_id


def _writer_alone(uri: str, total: int) -> float:
    """The bulk writer's ``log_batch`` of 1000 metrics, one call after another."""
    run_id = _new_run(uri, "writer-alone")
    now_ms = time.time_ns() // 1_000_000
    points = [Metric("bench/bulk", float(i), now_ms, i) for i in range(total)]
    writer = BulkWriter(create_engine(uri))
    started = time.perf_counter()
    for i in range(0, total, _CALL):
        writer.log_batch(run_id, metrics=points[i : i + _CALL])
    elapsed = time.perf_counter() - started
    writer.engine.dispose()
    return total / elapsed


def _inserts_alone(uri: str, total: int) -> float:
    """Plain inserts of the same rows through the database driver (SQLite's executemany,
    psycopg2's execute_values), then the latest point replaced, 1000 a transaction."""
    run_id = _new_run(uri, "inserts-alone")
    now_ms = time.time_ns() // 1_000_000
    rows = [("bench/raw", float(i), now_ms, i, False, run_id) for i in range(total)]
    columns = '"key", "value", "timestamp", "step", "is_nan", "run_uuid"'
    engine = sa.create_engine(uri)
    raw = engine.raw_connection()
    sqlite = uri.startswith("sqlite")
    mark = "?" if sqlite else "%s"
    latest = (
        f"DELETE FROM latest_metrics WHERE run_uuid = {mark}",
        f"INSERT INTO latest_metrics ({columns}) VALUES ({', '.join([mark] * 6)})",
    )
    started = time.perf_counter()
    try:
        for i in range(0, total, _CALL):
            cursor = raw.cursor()
            if sqlite:
                cursor.executemany(
                    f"INSERT INTO metrics ({columns}) VALUES (?, ?, ?, ?, ?, ?)",
                    rows[i : i + _CALL],
                )
            else:
                from psycopg2.extras import execute_values

                execute_values(
                    cursor, f"INSERT INTO metrics ({columns}) VALUES %s", rows[i : i + _CALL]
                )
            cursor.execute(latest[0], (run_id,))
            cursor.execute(latest[1], rows[min(i + _CALL, total) - 1])
            cursor.close()
            raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return total / (time.perf_counter() - started)
