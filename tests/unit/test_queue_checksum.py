"""Queue payloads carry a CRC-32 (issue 25), in process over a real SQLite queue file whose
bytes are damaged on disk (inside a stored payload, where SQLite itself notices nothing): the
damaged batch is detected on read, counted as lost once, reported (a ``damaged`` gap for
``status``, the meta counter behind ``/metrics``, one log line naming the run), never written to
MLflow or read again, and the flusher writes everything else."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, RunEnd, RunStart, RunStatus
from server.flush import flusher, retry
from server.flush.flusher import Flusher
from server.flush.sink import MlflowSink
from server.queue.gaps import format_gaps, read_gaps
from server.queue.integrity import problem
from server.queue.sqlite import Backlog, Queue, connect
from tests.support.fake_mlflow import FakeMlflow

pytestmark = pytest.mark.timeout(60)

JOB = "job"
MARK = "damage-here"
"""A metric key only the batch to damage holds: where its bytes are in the file (its first
point's key is damaged)."""


def _batch(run_key: str, first: int, key: str, count: int, *, start: bool = False) -> EventBatch:
    events: list[object] = [RunStart(run_name=run_key)] if start else []
    events += [Metric(key, float(first + i), first + i, 1000 + i) for i in range(count)]
    if key == "end":
        events[-1] = RunEnd(RunStatus.FINISHED, 5000)
    return EventBatch("site", JOB, run_key, first, tuple(events))  # type: ignore[arg-type]


def _store(path: Path, batches: list[EventBatch]) -> None:
    conn = connect(path)
    for b in batches:
        payload = batch_to_proto(b).SerializeToString()
        Queue(conn).store([(b.run_key, b.client_id, b.job, b.first_seq, b.last_seq, payload)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the rows in the main file, as on a stop
    conn.close()


def _damage(path: Path, marker: str) -> None:
    """Flips one byte of a stored payload in the file itself (the receiver is stopped)."""
    data = bytearray(path.read_bytes())
    at = data.find(marker.encode())
    assert at >= 0
    data[at + 3] ^= 0x20
    path.write_bytes(bytes(data))


# run "hit": a start, a good batch, the damaged one, a good one and its end; run "other" whole
BATCHES = [
    _batch("hit", 1, "x", 4, start=True),
    _batch("hit", 6, MARK, 5),
    _batch("hit", 11, "x", 4),
    _batch("hit", 15, "end", 1),
    _batch("other", 1, "y", 6, start=True),
    _batch("other", 8, "end", 1),
]


def test_a_damaged_payload_is_set_aside_counted_once_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "queue.db"
    _store(path, BATCHES)
    _damage(path, MARK)
    assert problem(tmp_path) is None  # SQLite's own check sees nothing wrong

    conn = connect(path)
    backlog = Backlog(Queue(conn).pending_events())
    queue = Queue(conn, backlog)
    with caplog.at_level(logging.ERROR, logger="server.queue.checksum"):
        read = queue.pending("hit", 10)
        again = queue.pending("hit", 10)
        after = queue.pending_after("hit", 0, 10)
    assert [b.first_seq for b in read] == [1, 11, 15] == [b.first_seq for b in again]
    assert [b.first_seq for b in after] == [1, 11, 15]
    assert [b.first_seq for b in queue.pending("other", 10)] == [1, 8]
    assert queue.damaged_events() == 5
    assert backlog.events == (5 + 4 + 1) + (7 + 1)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "run hit" in line and "6-10" in line and "checksum" in line
    (gap,) = read_gaps(conn)
    assert (gap["run_key"], gap["kind"], gap["first_seq"], gap["last_seq"], gap["count"]) == (
        "hit",
        "damaged",
        6,
        10,
        5,
    )
    text = "\n".join(format_gaps([gap]))
    assert "5 lost to damage" in text and "run hit: events 6-10 are lost" in text
    conn.close()


def test_the_flusher_writes_everything_else_and_never_the_damaged_batch(tmp_path: Path) -> None:
    """Before payloads had checksums, the damaged batch reached MLflow as other events (or
    stopped its run's turn for good with a decode error)."""
    path = tmp_path / "queue.db"
    _store(path, BATCHES)
    _damage(path, MARK)
    conn = connect(path)
    mlflow = FakeMlflow()
    sink = MlflowSink("http://127.0.0.1:9", receiver_id="receiver-1")
    sink._client = mlflow  # type: ignore[assignment]
    backlog = Backlog(Queue(conn).pending_events())
    made = Flusher(
        Queue(conn, backlog), sink, interval_s=1.0, on_run=lambda *_: None, backlog=backlog,
        last_seen={}, lease_s=600.0, receiver_id="receiver-1",
    )  # fmt: skip
    for _ in range(10):
        made._cycle(False)
        if Queue(conn).pending_count() == 0:
            break
    assert Queue(conn).pending_count() == 0
    assert backlog.events == 0
    runs = {r.tags["trackbridge.run_key"]: r for r in mlflow.runs.values()
            if r.tags.get("trackbridge.role") == "client"}  # fmt: skip
    assert sorted(runs) == ["hit", "other"]
    assert [m[0] for m in runs["hit"].metrics] == ["x"] * 8  # the damaged batch's are lost
    assert [m[1] for m in runs["hit"].metrics] == [1, 2, 3, 4, 11, 12, 13, 14]
    assert [m[1] for m in runs["other"].metrics] == [1, 2, 3, 4, 5, 6]
    assert runs["hit"].status == runs["other"].status == "FINISHED"
    assert Queue(conn).damaged_events() == 5
    conn.close()


@pytest.fixture(autouse=True)
def _no_retry_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "RETRY_WINDOW_S", -1.0)
    monkeypatch.setattr(
        flusher, "time", SimpleNamespace(monotonic=time.monotonic, perf_counter=time.perf_counter)
    )
