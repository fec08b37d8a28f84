"""Every batch of a run carries the experiment its start chose (issue 23), in process: the
client puts it on each batch (and on its loss reports), the queue keeps it with the batch (an
older queue file gains the columns), and a receiver that never got the run's start creates the
run in that experiment, not the job's; a batch from an older client keeps today's rule."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridge.convert import batch_to_proto, check_batch
from bridge.errors import BatchRejected
from bridge.events import Dropped, EventBatch, Metric, RunEnd, RunStart, RunStatus
from bridge.pb.v1 import events_pb2
from client_sdk._batches import RunState, build
from client_sdk.config import WriterConfig
from server.flush import flusher, retry
from server.flush.flusher import Flusher
from server.flush.sink import MlflowSink
from server.ingest.ingestor import Ingestor
from server.queue.sqlite import Backlog, Queue, connect
from tests.support.fake_mlflow import FakeMlflow

pytestmark = pytest.mark.timeout(60)

JOB = "the-job"


def _decoded(payload: bytes) -> events_pb2.EventBatch:
    return events_pb2.EventBatch.FromString(payload)


def test_the_client_puts_its_runs_choice_on_every_batch_and_report() -> None:
    config = WriterConfig(client_id="site", job=JOB, max_batch_events=3)
    runs = {"r": RunState("r"), "other": RunState("other")}
    start = RunStart(experiment="chosen", experiment_id="7", run_name="r")
    items = [("r", start)] + [("r", "x", float(i), i, 1000 + i) for i in range(7)]
    first = build(config, runs, items, [])  # type: ignore[arg-type]
    later = build(config, runs, [("r", "x", 9.0, 9, 1009), ("other", "x", 1.0, 1, 1)], [])
    report = build(config, runs, [], [("r", Dropped(2, "buffer_full", 0, 0, 1, 2))])
    mine = [b for b in first + later + report if b.run.key == "r"]
    assert len(mine) == 5  # 8 events in threes, one later, one report
    for built in mine:
        msg = _decoded(built.payload)
        assert (msg.experiment, msg.experiment_id) == ("chosen", "7")
    (theirs,) = [b for b in later if b.run.key == "other"]
    assert (_decoded(theirs.payload).experiment, _decoded(theirs.payload).experiment_id) == ("", "")


def test_a_batch_naming_an_experiment_mlflow_would_refuse_is_rejected() -> None:
    msg = batch_to_proto(EventBatch("site", JOB, "r", 1, (Metric("x", 1.0, 0, 1),)))
    msg.experiment = "a/" * 300
    with pytest.raises(BatchRejected, match="experiment"):
        check_batch(msg)
    msg.experiment, msg.experiment_id = "", "9" * 300
    with pytest.raises(BatchRejected, match="experiment_id"):
        check_batch(msg)


def test_an_older_queue_file_opens_with_the_new_columns(tmp_path: Path) -> None:
    """A queue written before the batches had an experiment and a checksum: its rows read back
    with neither (unchecked) and flush as before."""
    path = tmp_path / "queue.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE batches (id INTEGER PRIMARY KEY, run_key TEXT NOT NULL,"
        " first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, payload BLOB NOT NULL);"
    )
    payload = batch_to_proto(EventBatch("site", JOB, "r", 1, (Metric("x", 1.0, 0, 1),)))
    old.execute(
        "INSERT INTO batches (run_key, first_seq, last_seq, payload) VALUES ('r', 1, 1, ?)",
        (payload.SerializeToString(),),
    )
    old.commit()
    old.close()
    conn = connect(path)
    (batch,) = Queue(conn).pending("r", 10)
    assert (batch.experiment, batch.experiment_id, batch.payload) == (
        "",
        "",
        payload.SerializeToString(),
    )
    conn.close()


class _Receiver:
    """A receiver's flusher over a real queue file and a fake MLflow, whose run lease has
    passed at once: a run whose start it never got is created by it at its first turn."""

    def __init__(self, path: Path, mlflow: FakeMlflow) -> None:
        self.conn = connect(path)
        self.mlflow = mlflow
        sink = MlflowSink("http://127.0.0.1:9", receiver_id="receiver-1")
        sink._client = mlflow  # type: ignore[assignment]
        self.flusher = Flusher(
            Queue(self.conn), sink, interval_s=1.0, on_run=lambda *_: None, backlog=Backlog(0),
            last_seen={}, lease_s=0.0, receiver_id="receiver-1",
        )  # fmt: skip

    def store(self, batch: EventBatch) -> None:
        payload = batch_to_proto(batch).SerializeToString()
        row = (batch.run_key, batch.client_id, JOB, batch.first_seq, batch.last_seq, payload)
        Queue(self.conn).store([(*row, batch.experiment, batch.experiment_id)])

    def write_all(self) -> None:
        for _ in range(20):
            self.flusher._cycle(False)
            if Queue(self.conn).flushable_count() == 0:
                return
        raise AssertionError("not written")

    def experiment_of(self, client_id: str) -> str:
        (run,) = [r for r in self.mlflow.runs.values() if r.tags.get("trackbridge.client_id")
                  == client_id and r.tags.get("trackbridge.role") == "client"]  # fmt: skip
        return str(self.mlflow.experiments[run.experiment_id].name)


@pytest.fixture(autouse=True)
def _no_retry_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "RETRY_WINDOW_S", -1.0)
    monkeypatch.setattr(
        flusher, "time", SimpleNamespace(monotonic=time.monotonic, perf_counter=time.perf_counter)
    )


def _without_start(client_id: str, experiment: str = "", experiment_id: str = "") -> EventBatch:
    """A run's batch after its start, which this receiver never got (it went to another one,
    or was lost with a damaged spool)."""
    points = tuple(Metric("x", float(i), i, 1000 + i) for i in range(5))
    events = (*points, RunEnd(RunStatus.FINISHED, 5000))
    return EventBatch(client_id, JOB, f"run-{client_id}", 2, events, experiment, experiment_id)


def test_a_run_whose_start_never_came_is_created_in_the_experiment_its_batches_name(
    tmp_path: Path,
) -> None:
    """The durable fix of issue 23's item 8: before it, such a run went to the job's
    experiment."""
    mlflow = FakeMlflow()
    existing = mlflow.create_experiment("by-id")
    receiver = _Receiver(tmp_path / "queue.db", mlflow)
    receiver.store(_without_start("named", experiment="chosen-by-name"))
    receiver.store(_without_start("by-id", experiment="ignored", experiment_id=existing))
    receiver.store(_without_start("old-client"))  # no choice on the wire: today's rule
    receiver.write_all()
    assert receiver.experiment_of("named") == "chosen-by-name"
    assert receiver.experiment_of("by-id") == "by-id"
    assert receiver.experiment_of("old-client") == JOB
    for client_id in ("named", "by-id", "old-client"):
        (run,) = [r for r in mlflow.runs.values() if r.tags.get("trackbridge.client_id")
                  == client_id and r.tags.get("trackbridge.role") == "client"]  # fmt: skip
        assert [m[1] for m in run.metrics] == [float(i) for i in range(5)]
        assert run.status == "FINISHED"
    receiver.conn.close()


def test_the_queue_keeps_the_choice_of_a_partial_resend(tmp_path: Path) -> None:
    """A batch resent in part (its head acknowledged already) is stored as its tail: the tail
    keeps the run's experiment, in its columns and its payload."""
    conn = connect(tmp_path / "queue.db")
    ingestor = Ingestor(Queue(conn), lambda *_: None, Backlog(0))
    key = "site/r"

    def batch(first: int, last: int) -> events_pb2.EventBatch:
        points = tuple(Metric("x", float(i), i, 1000 + i) for i in range(first, last + 1))
        return batch_to_proto(EventBatch("site", JOB, "r", first, points, "chosen", "7"))

    async def publish() -> list[int]:
        acked = []
        for msg in (batch(1, 5), batch(3, 8)):
            accepted = await ingestor.submit(msg, key, msg.SerializeToString())
            acked.append(accepted.acked_seq)
        return acked

    ingestor.start()
    try:
        assert asyncio.run(publish()) == [5, 8]
    finally:
        ingestor.stop(10.0)
    stored = Queue(conn).pending(key, 10)
    assert [(b.first_seq, b.last_seq) for b in stored] == [(1, 5), (6, 8)]
    for b in stored:
        assert (b.experiment, b.experiment_id) == ("chosen", "7")
        msg = _decoded(b.payload)
        assert (msg.experiment, msg.experiment_id) == ("chosen", "7")
    conn.close()
