"""Benchmark section ``recovery``: a receiver killed with SIGKILL in the middle of a flush, and
how long its restart takes to write the rest.

Clients log ``recovery_runs`` runs of ``recovery_points`` points through a ``trackbridge serve``
process into MLflow and wait until every event is acknowledged (durable in the queue). When
``recovery_kill_at`` of them are in MLflow the receiver gets SIGKILL; MLflow is counted; a new
receiver starts on the same data directory, and the clock runs from its start command until its
queue is empty. Its ``/metrics`` say how many metric points it wrote: anything beyond what
MLflow lacked at the kill was sent again.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from bench.procs import (
    BenchError,
    Child,
    load_generator,
    read_all,
    start_receiver,
    wait_receiver,
    wait_until,
)
from bench.sections import BenchContext
from server.flush.run_tags import TAG_ROLE
from server.queue.sqlite import REMAINING

_logger = logging.getLogger(__name__)

_KEY = "bench/e2e"
_JOB = "bench-recovery"
_TIMEOUT_S = 600.0
_POLL_S = 0.05


def recovery(ctx: BenchContext) -> dict[str, Any]:
    """Kill -9 mid-flush, restart, catch up: the recovery target's figures."""
    opts = ctx.options
    data_dir = ctx.work_dir / "receiver-recovery"
    first = _serve(ctx, data_dir, "receiver-recovery")
    gen = load_generator(
        ctx.procs,
        "load-recovery",
        "e2e",
        *("--receiver", first[1], "--job", _JOB, "--prefix", "recovery"),
        *("--clients", str(opts.recovery_runs), "--points", str(opts.recovery_points)),
        *("--flush-timeout", str(_TIMEOUT_S)),
    )
    read_all([gen], _TIMEOUT_S)
    gen.send("go")
    (sent,) = read_all([gen], _TIMEOUT_S)
    if sent["undelivered"]:
        raise BenchError(f"{sent['undelivered']} events were not acknowledged")
    acked = _acked(data_dir)
    wait_until(
        lambda: _pending(data_dir) <= acked * (1 - opts.recovery_kill_at),
        "the flush", _TIMEOUT_S, _POLL_S,
    )  # fmt: skip
    first[0].proc.send_signal(signal.SIGKILL)
    first[0].proc.wait(timeout=30)
    left = _pending(data_dir)
    client = MlflowClient(ctx.mlflow_uri)
    points = opts.recovery_runs * opts.recovery_points
    in_mlflow = _settled(client)  # the call in flight at the kill may still be landing

    (data_dir / "ready.json").unlink()
    started = time.perf_counter()
    second, _address, http_port = _serve(ctx, data_dir, "receiver-recovery-restarted")
    ready_s = time.perf_counter() - started
    wait_until(
        lambda: _pending(data_dir) == 0, "the restarted receiver to catch up", _TIMEOUT_S, _POLL_S
    )
    caught_up_s = time.perf_counter() - started
    written = _metrics(http_port)
    ctx.procs.stop(second)
    stored = _stored(client)
    return {
        "runs": opts.recovery_runs,
        "points": points,
        "events_left_at_kill": left,
        "points_in_mlflow_at_kill": in_mlflow,
        "restart_ready_s": ready_s,
        "caught_up_s": caught_up_s,
        "points_per_s_after_restart": (points - in_mlflow) / max(1e-9, caught_up_s - ready_s),
        "points_written_after_restart": written["trackbridge_metric_points_written_total"],
        "points_sent_again": written["trackbridge_metric_points_written_total"]
        - (points - in_mlflow),
        "recovered_events": written["trackbridge_recovered_events_total"],
        "points_in_mlflow": stored,
    }


def _serve(ctx: BenchContext, data_dir: Path, name: str) -> tuple[Child, str, int]:
    child = start_receiver(
        ctx.procs, name, data_dir, ctx.mlflow_uri, flush_interval_s=ctx.options.flush_interval_s
    )
    rx = wait_receiver(child, data_dir)
    http_port = int(json.loads((data_dir / "ready.json").read_text())["http_port"])
    return child, rx.address, http_port


def _query(data_dir: Path, sql: str) -> int:
    conn = sqlite3.connect(f"{(data_dir / 'queue.db').resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _acked(data_dir: Path) -> int:
    return _query(data_dir, "SELECT COALESCE(SUM(acked_seq), 0) FROM runs")


def _pending(data_dir: Path) -> int:
    return _query(data_dir, f"SELECT COALESCE(SUM({REMAINING}), 0) FROM batches")


def _stored(client: MlflowClient) -> int:
    experiment = client.get_experiment_by_name(_JOB)
    if experiment is None:
        return 0
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{TAG_ROLE}` = 'client'", max_results=1000
    )
    return sum(len(client.get_metric_history(r.info.run_id, _KEY)) for r in runs)


def _settled(client: MlflowClient) -> int:
    previous, count = -1, _stored(client)
    while count != previous:
        time.sleep(0.5)
        previous, count = count, _stored(client)
    return count


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values
