"""A caller's reads of its own run with its events on their way added (server/tracking/overlay.py),
against MLflow's own SQL store.

MLflow holds the first calls of a stream, the rest are on their way (some of them may be in
MLflow already: the flusher wrote them while the read was asked). The overlaid
``get_metric_history`` and ``get_run`` must answer what MLflow answers once it holds them all:
random streams of duplicate points, equal steps, out-of-order timestamps, NaN and infinities
already in MLflow, params logged again. What the overlay cannot add as MLflow would leaves the
read to wait for MLflow (``pending_of`` answers None), read from a real queue database.
"""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mlflow.entities import Metric, Param
from mlflow.protos import service_pb2 as pb
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from bridge.convert import batch_to_proto
from bridge.events import Event, EventBatch, RunEnd, RunStatus, Tag
from bridge.events import Metric as PointEvent
from bridge.events import Param as ParamEvent
from server.queue.schema import connect
from server.queue.sqlite import Queue
from server.tracking import overlay
from server.tracking.entities import run_proto
from server.tracking.scope import Caller, ReadScope
from server.tracking.service import TrackingService

KEYS = ("loss", "acc/top1")
PARAMS = ("lr", "opt", "seed")

finite = st.sampled_from([0.0, 1.0, 2.5, -1.0, 1e-300])
points = st.tuples(
    st.sampled_from(KEYS), finite, st.integers(0, 3), st.integers(-1, 3)
)  # key, value, timestamp, step
in_mlflow = st.tuples(
    st.sampled_from(KEYS),
    st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf])),
    st.integers(0, 3),
    st.integers(-1, 3),
)
params = st.tuples(st.sampled_from(PARAMS), st.sampled_from(["a", "b"]))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SqlAlchemyStore:
    root = tmp_path_factory.mktemp("mlflow")
    return SqlAlchemyStore(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri())


def _log(store: SqlAlchemyStore, run_id: str, pts: list[Any], prm: list[Any]) -> None:
    """One call per point and param, as a script logging them one by one; a param MLflow
    holds with another value is refused, as MLflow refuses it."""
    for key, value, timestamp, step in pts:
        store.log_batch(run_id, metrics=[Metric(key, value, timestamp, step)], params=[], tags=[])
    for key, value in prm:
        held = store.get_run(run_id).data.params.get(key)
        if held is None:
            store.log_batch(run_id, metrics=[], params=[Param(key, value)], tags=[])


def _answers(store: SqlAlchemyStore, run_id: str) -> dict[str, bytes]:
    """What the receiver's MLflow answers: GetRun and each key's GetMetricHistory."""
    out = {"run": pb.GetRun.Response(run=run_proto(store.get_run(run_id))).SerializeToString()}
    for key in KEYS:
        history = pb.GetMetricHistory.Response()
        history.metrics.extend(m.to_proto() for m in store.get_metric_history(run_id, key))
        out[key] = history.SerializeToString()
    return out


def _same(value: float) -> Any:
    return "nan" if math.isnan(value) else value


def _history(payload: bytes) -> list[tuple[Any, ...]]:
    reply = pb.GetMetricHistory.Response.FromString(payload)
    return [(m.key, _same(m.value), m.timestamp, m.step) for m in reply.metrics]


def _run(payload: bytes) -> tuple[dict[str, str], dict[str, tuple[Any, ...]]]:
    data = pb.GetRun.Response.FromString(payload).run.data
    metrics = {m.key: (_same(m.value), m.timestamp, m.step) for m in data.metrics}
    return {p.key: p.value for p in data.params}, metrics


def _mlflow_order(history: list[tuple[Any, ...]]) -> bool:
    order = [(t, s, 0.0 if v == "nan" else v) for _k, v, t, s in history]
    return order == sorted(order)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,  # the same streams on every run: a CI failure replays locally
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(  # NaN is stored as 0: a later 0.0 at its step and time is a row of its own, not later
    held=[("loss", math.nan, 1, 2)], held_params=[], coming=[("loss", 0.0, 1, 2)],
    coming_params=[], written=0,
)  # fmt: skip
@example(  # MLflow's order is by time first: a point logged later at an earlier time comes first
    held=[("loss", 1.0, 1, 5), ("loss", 1.0, 2, 0)], held_params=[],
    coming=[("loss", 3.0, 0, 9), ("loss", 1.0, 2, 0)], coming_params=[], written=1,
)  # fmt: skip
@given(
    held=st.lists(in_mlflow, max_size=8),
    held_params=st.lists(params, max_size=3),
    coming=st.lists(points, max_size=8),
    coming_params=st.lists(params, max_size=3),
    written=st.integers(0, 3),
)
def test_an_overlaid_read_answers_what_mlflow_answers_once_it_holds_the_events(
    store: SqlAlchemyStore,
    held: list[Any],
    held_params: list[Any],
    coming: list[Any],
    coming_params: list[Any],
    written: int,
) -> None:
    run_id = store.create_run("0", "tester", 0, [], f"r-{uuid.uuid4().hex}").info.run_id
    _log(store, run_id, held, held_params)
    # The flusher may have written the first few of the events on their way by the time
    # MLflow answers the read: they are in MLflow and on their way both.
    _log(store, run_id, coming[:written], [])
    before = _answers(store, run_id)
    pending = overlay.Pending(points=list(coming), params=list(coming_params))
    _log(store, run_id, coming[written:], coming_params)
    after = _answers(store, run_id)

    got = pending.apply(overlay.GET_RUN, pb.GetRun(run_id=run_id), before["run"])
    assert got is not None
    assert _run(got) == _run(after["run"])
    for key in KEYS:
        request = pb.GetMetricHistory(run_id=run_id, metric_key=key, max_results=25_000)
        got = pending.apply(overlay.GET_METRIC_HISTORY, request, before[key])
        assert got is not None
        assert sorted(_history(got), key=repr) == sorted(_history(after[key]), key=repr)
        assert _mlflow_order(_history(got))


def test_a_param_mlflow_holds_keeps_its_value() -> None:
    """MLflow refuses to change a param: the overlay shows the value MLflow holds."""
    reply = pb.GetRun.Response()
    reply.run.info.lifecycle_stage = "active"
    reply.run.data.params.add(key="lr", value="0.1")
    pending = overlay.Pending(params=[("lr", "0.2"), ("opt", "adam"), ("opt", "sgd")])
    got = pending.apply(overlay.GET_RUN, pb.GetRun(run_id="r"), reply.SerializeToString())
    assert got is not None
    assert _run(got)[0] == {"lr": "0.1", "opt": "adam"}


def test_a_run_deleted_in_mlflow_gets_nothing_added() -> None:
    """MLflow refuses writes to a deleted run (the flusher holds them, quarantined)."""
    reply = pb.GetRun.Response()
    reply.run.info.lifecycle_stage = "deleted"
    reply.run.data.params.add(key="lr", value="0.1")
    pending = overlay.Pending(points=[("loss", 1.0, 1, 0)], params=[("opt", "adam")])
    payload = reply.SerializeToString()
    assert pending.apply(overlay.GET_RUN, pb.GetRun(run_id="r"), payload) == payload


def test_a_history_past_its_page_is_left_to_mlflow() -> None:
    """More points than the call's page holds: None, and the read waits for MLflow."""
    reply = pb.GetMetricHistory.Response()
    reply.metrics.add(key="loss", value=1.0, timestamp=1, step=0)
    pending = overlay.Pending(points=[("loss", 2.0, 2, 1)])
    request = pb.GetMetricHistory(run_id="r", metric_key="loss", max_results=1)
    assert pending.apply(overlay.GET_METRIC_HISTORY, request, reply.SerializeToString()) is None
    reply.next_page_token = "more"
    request = pb.GetMetricHistory(run_id="r", metric_key="loss", max_results=10)
    assert pending.apply(overlay.GET_METRIC_HISTORY, request, reply.SerializeToString()) is None


def test_only_a_first_page_of_a_history_and_a_run_are_overlaid() -> None:
    run = pb.GetRun(run_id="r").SerializeToString()
    first = pb.GetMetricHistory(run_id="r", metric_key="k", max_results=5).SerializeToString()
    later = pb.GetMetricHistory(run_id="r", metric_key="k", page_token="t").SerializeToString()
    search = pb.SearchRuns(experiment_ids=["1"]).SerializeToString()
    assert overlay.target(overlay.GET_RUN, run) is not None
    assert overlay.target(overlay.GET_METRIC_HISTORY, first) is not None
    assert overlay.target(overlay.GET_METRIC_HISTORY, later) is None
    assert overlay.target(pb.SearchRuns.DESCRIPTOR.full_name, search) is None


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    conn = connect(tmp_path / "queue.db")
    try:
        yield Queue(conn)
    finally:
        conn.close()


def _store(queue: Queue, first_seq: int, *events: Event) -> None:
    batch = EventBatch("c", "job", "k", first_seq, tuple(events))
    payload = batch_to_proto(batch).SerializeToString()
    queue.store([("c/k", "c", "job", first_seq, first_seq + len(events) - 1, payload)])


def _pending(queue: Queue, flushed_seq: int = 0) -> overlay.Pending | None:
    return overlay.pending_of(queue._conn, "c/k", flushed_seq)


def test_the_events_on_their_way_are_read_from_the_queue_after_what_mlflow_holds(
    queue: Queue,
) -> None:
    _store(queue, 1, RunEnd(RunStatus.FINISHED, 5), PointEvent("loss", 1.0, 0, 10))
    _store(queue, 3, ParamEvent("lr", "0.1"), PointEvent("loss", 0.5, 1, 11))
    # The run's end was written: the first batch is written up to seq 1.
    queue._conn.execute("UPDATE batches SET done_seq = 1 WHERE first_seq = 1")
    assert _pending(queue) == overlay.Pending(
        points=[("loss", 1.0, 10, 0), ("loss", 0.5, 11, 1)], params=[("lr", "0.1")]
    )
    assert _pending(queue, flushed_seq=3) == overlay.Pending(points=[("loss", 0.5, 11, 1)])
    assert _pending(queue, flushed_seq=4) == overlay.Pending()


@pytest.mark.parametrize(
    "event",
    [
        Tag("note", "a"),
        RunEnd(RunStatus.FINISHED, 5),
        PointEvent("loss", math.nan, 0, 1),
        PointEvent("loss", math.inf, 0, 1),
        PointEvent("loss", 1.0, 0, 1, round=2),
        PointEvent("bad..key/", 1.0, 0, 1),
        ParamEvent("big", "x" * 6001),
    ],
    ids=["tag", "end", "nan", "inf", "round", "refused-key", "long-param"],
)
def test_a_read_waits_for_what_the_overlay_cannot_add_as_mlflow_would(
    queue: Queue, event: Event
) -> None:
    _store(queue, 1, PointEvent("loss", 1.0, 0, 10), event)
    assert _pending(queue) is None
    assert _pending(queue, flushed_seq=2) == overlay.Pending()  # once MLflow holds it


def test_a_damaged_batch_is_not_added(queue: Queue) -> None:
    """A batch whose payload no longer matches its checksum: the read waits (the flusher sets
    it aside and reports it)."""
    _store(queue, 1, PointEvent("loss", 1.0, 0, 10))
    queue._conn.execute("UPDATE batches SET crc = crc + 1")
    assert _pending(queue) is None


def test_a_read_waits_for_more_events_than_the_overlay_decodes(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(overlay, "MAX_EVENTS", 3)
    _store(queue, 1, *(PointEvent("loss", 1.0, i, i) for i in range(4)))
    assert _pending(queue) is None
    assert _pending(queue, flushed_seq=1) is not None


class _BrokenQueue:
    """A queue connection whose reads fail (a damaged file, an I/O error)."""

    def execute(self, *_: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")


def test_a_queue_that_cannot_be_read_leaves_the_read_to_wait_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connect(tmp_path / "queue.db").close()
    service = TrackingService(
        tracking_uri="http://127.0.0.1:9",
        artifact_location=None,
        queue_path=tmp_path / "queue.db",
        ingestor=None,  # type: ignore[arg-type]  # not asked here
        flush_soon=lambda: None,
        uploads_pending=lambda keys: False,
        mlflow_error=lambda: "",
        authenticator=None,  # type: ignore[arg-type]
        viewer_token="",
        scope=ReadScope.JOB,
    )
    try:
        service._queue = _BrokenQueue()  # type: ignore[assignment]
        assert service._pending_of(Caller("c", "j", ReadScope.JOB), "r") is None
    finally:
        service._queue = sqlite3.connect(":memory:")
        service.close()
    assert "events on their way" in caplog.text and "disk I/O error" in caplog.text
