"""A job's new runs created together (server/flush/batch_creation.py), against a real
``mlflow server``: one receiver alone, and two receivers racing for the same runs."""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import Event, EventBatch, Metric, RunEnd, RunStart, RunStatus
from client_sdk._transport import Transport
from server.flush.run_creation import TAG_PROVISIONAL
from tests.support.faults import expected_points, metric_points
from tests.support.mlflow_reads import (
    TAG_CLIENT_ID,
    TAG_PARENT,
    TAG_RUN_KEY,
    child_runs,
    job_runs,
    parent_runs,
)
from tests.support.procs import ReceiverProcess, wait_until

pytestmark = pytest.mark.slow

BASE_TS = 1_700_000_000_000
TOGETHER = re.compile(r"(\d+) new runs created together")


def _created_together(receiver: ReceiverProcess) -> int:
    """How many runs the receiver's log says it created in batches."""
    return sum(int(n) for n in TOGETHER.findall(receiver.log_path.read_text(errors="replace")))


def _batch(run_key: str, client_id: str, job: str, events: list[Event]) -> bytes:
    return bytes(
        batch_to_proto(EventBatch(client_id, job, run_key, 1, tuple(events))).SerializeToString()
    )


def _first_batches(job: str, runs: dict[str, str], points: int) -> list[bytes]:
    return [
        _batch(
            key,
            cid,
            job,
            [
                RunStart(run_name=f"run-{cid}", tags={"site": cid}, start_time_ms=BASE_TS),
                *[Metric("x", float(i), i, BASE_TS + i) for i in range(points)],
                RunEnd(RunStatus.FINISHED, BASE_TS + points),
            ],
        )
        for cid, key in runs.items()
    ]


def _queued(receiver: ReceiverProcess) -> int:
    conn = sqlite3.connect(f"{(receiver.data_dir / 'queue.db').as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
    finally:
        conn.close()


def _publish_all(receivers: list[ReceiverProcess], payloads: list[bytes]) -> None:
    """Every payload to every receiver, the receivers' streams at the same moment."""
    barrier = threading.Barrier(len(receivers))
    errors: list[BaseException] = []

    def publish(receiver: ReceiverProcess) -> None:
        transport = Transport(receiver.address, 30.0)
        try:
            barrier.wait(timeout=30)
            for payload in payloads:
                transport.publish(payload)
        except BaseException as exc:
            errors.append(exc)
        finally:
            transport.close()

    threads = [threading.Thread(target=publish, args=(r,)) for r in receivers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def _finished(
    mlflow: Any, job: str, count: int, receivers: list[ReceiverProcess]
) -> Callable[[], list[Any] | None]:
    def check() -> list[Any] | None:
        children = child_runs(job_runs(mlflow, job))
        done = len(children) >= count and all(r.info.status == "FINISHED" for r in children)
        return children if done and all(_queued(r) == 0 for r in receivers) else None

    return check


def _check_runs(
    mlflow: Any, job: str, runs: dict[str, str], children: list[Any], points: int
) -> None:
    (parent,) = parent_runs(job_runs(mlflow, job))
    assert len(children) == len(runs)
    assert {r.data.tags[TAG_CLIENT_ID] for r in children} == set(runs)
    for run in children:
        cid = run.data.tags[TAG_CLIENT_ID]
        assert run.data.tags[TAG_RUN_KEY] == runs[cid]
        assert run.data.tags[TAG_PARENT] == parent.info.run_id
        assert run.info.run_name == f"run-{cid}"
        assert run.info.start_time == BASE_TS
        assert run.data.tags["site"] == cid
        assert TAG_PROVISIONAL not in run.data.tags
        history = mlflow.get_metric_history(run.info.run_id, "x")
        assert [m.step for m in sorted(history, key=lambda m: m.timestamp)] == list(range(points))
        assert metric_points(mlflow, run.info.run_id, "x") == expected_points(points, BASE_TS)


@pytest.mark.timeout(300)
def test_a_jobs_new_runs_are_created_together_each_with_its_start_and_points(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str
) -> None:
    receiver = start_receiver()
    runs = {f"site-{i}": uuid.uuid4().hex for i in range(30)}
    _publish_all([receiver], _first_batches(job, runs, 40))
    children = wait_until(_finished(mlflow_client, job, 30, [receiver]), 120, interval_s=0.5,
                          what="thirty finished runs, queue empty")  # fmt: skip
    _check_runs(mlflow_client, job, runs, children, 40)
    assert _created_together(receiver) >= 2


@pytest.mark.timeout(300)
def test_two_receivers_creating_the_same_runs_together_keep_one_run_per_key(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str
) -> None:
    """Both receivers get every run's first batch at the same moment (a client resending to
    another receiver after a lost ack, for a whole job): each key ends with one run, whose
    points are in it once."""
    a, b = start_receiver(), start_receiver()
    runs = {f"site-{i}": uuid.uuid4().hex for i in range(30)}
    _publish_all([a, b], _first_batches(job, runs, 40))
    children = wait_until(_finished(mlflow_client, job, 30, [a, b]), 180, interval_s=0.5,
                          what="thirty finished runs, both queues empty")  # fmt: skip
    _check_runs(mlflow_client, job, runs, children, 40)
    assert _created_together(a) + _created_together(b) >= 2
