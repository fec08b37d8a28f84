"""Flushing several runs at once (``serve --flush-workers``): each run's contents and order in
MLflow are exactly what its client sent, against a real ``mlflow server``."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import (
    DeleteTag,
    Event,
    EventBatch,
    Metric,
    Param,
    RunEnd,
    RunStart,
    RunStatus,
    Tag,
)
from client_sdk._transport import Transport
from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs
from tests.support.procs import ReceiverProcess, wait_until

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
RUNS = 12
BATCHES = 5
POINTS = 120
"""Points of each batch: a few log_batch calls per run and turn."""


def _batches(job: str, client_id: str, run_key: str) -> list[bytes]:
    """A run's batches: metrics, then a tag set again in every batch (its last value must
    win), a tag set, deleted and set again, params, and the run's end."""
    out = []
    seq = 1
    for k in range(BATCHES):
        events: list[Event] = []
        if k == 0:
            events.append(RunStart(run_name=client_id, start_time_ms=BASE_TS))
        first = k * POINTS
        events += [Metric("x", float(i), i, BASE_TS + i) for i in range(first, first + POINTS)]
        events += [Tag("phase", str(k)), Param(f"p{k}", str(k))]
        if k == 1:
            events.append(Tag("temp", "set"))
        if k == 2:
            events += [DeleteTag("temp"), Metric("after-delete", 1.0, k, BASE_TS + k)]
        if k == 3:
            events.append(Tag("temp", "again"))
        if k == BATCHES - 1:
            events.append(RunEnd(RunStatus.FINISHED, BASE_TS + 10_000))
        batch = EventBatch(client_id, job, run_key, seq, tuple(events))
        out.append(bytes(batch_to_proto(batch).SerializeToString()))
        seq += len(events)
    return out


def _queued(receiver: ReceiverProcess) -> int:
    conn = sqlite3.connect(f"{(receiver.data_dir / 'queue.db').as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.timeout(300)
def test_runs_flushed_by_several_writers_hold_exactly_what_each_client_sent_in_order(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str
) -> None:
    receiver = start_receiver(flush_interval_s=1.0, extra_args=("--flush-workers", "4"))
    runs = {f"site-{i}": uuid.uuid4().hex for i in range(RUNS)}
    transport = Transport(receiver.address, 30.0)
    try:  # every run's batches stored before the first flush: the writers share the work
        for k in range(BATCHES):
            for cid, key in runs.items():
                transport.publish(_batches(job, cid, key)[k])
    finally:
        transport.close()

    def finished() -> list[Any] | None:
        children = child_runs(job_runs(mlflow_client, job))
        done = len(children) >= RUNS and all(r.info.status == "FINISHED" for r in children)
        return children if done and _queued(receiver) == 0 else None

    children = wait_until(finished, 180, interval_s=0.5, what="every run written and ended")
    assert sorted(r.data.tags[TAG_CLIENT_ID] for r in children) == sorted(runs)
    points = BATCHES * POINTS
    for run in children:
        run_id = run.info.run_id
        history = mlflow_client.get_metric_history(run_id, "x")
        assert sorted((m.step, m.value, m.timestamp) for m in history) == [
            (i, float(i), BASE_TS + i) for i in range(points)
        ]
        assert run.data.tags["phase"] == str(BATCHES - 1)
        assert run.data.tags["temp"] == "again"
        assert run.data.params == {f"p{k}": str(k) for k in range(BATCHES)}
        assert [m.step for m in mlflow_client.get_metric_history(run_id, "after-delete")] == [2]
        assert run.info.end_time == BASE_TS + 10_000
