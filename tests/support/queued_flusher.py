"""The receiver's flusher as the receiver builds it, over a real SQLite queue file and the fake
MLflow (tests/support/fake_mlflow.py), driven one cycle at a time on the test's thread: the
in-process layer of the flusher's fault tests (tests/unit/test_flush_properties.py,
tests/faults/test_start_up_kill_points.py). A kill abandons the flusher; a new one reopens the
file, as a restarted receiver does."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch
from server.flush import backoff, flusher, outcomes, retry
from server.flush.flusher import Flusher
from server.flush.sink import MlflowSink
from server.queue.sqlite import Backlog, Queue, Stored, connect
from tests.support.fake_mlflow import FakeMlflow, Killed


class QueuedFlusher:
    """A receiver's flusher over a queue file and a (fake) MLflow; restartable."""

    def __init__(
        self, path: Path, mlflow: FakeMlflow, interval_s: float = 1.0, alone: bool = False
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self.alone = alone
        self.mlflow = mlflow
        self.restarts = 0
        self.conn: sqlite3.Connection | None = None
        self.flusher = self._start()

    def _start(self) -> Flusher:
        self.conn = connect(self.path)
        sink = MlflowSink("http://127.0.0.1:9", receiver_id="receiver-1")
        sink._client = self.mlflow  # type: ignore[assignment]
        made = Flusher(
            Queue(self.conn), sink, interval_s=self.interval_s, on_run=lambda *_: None,
            backlog=Backlog(0), last_seen={}, lease_s=600.0, receiver_id="receiver-1",
            alone=self.alone,
        )  # fmt: skip
        made._creator._threads = 1  # creation in call order, so that a schedule replays
        return made

    def restart(self) -> None:
        """A kill -9 at a call boundary: what the queue committed stays, memory is lost."""
        self.close()  # an open transaction rolls back, as it would on a kill
        self.mlflow.revive()
        self.restarts += 1
        self.flusher = self._start()

    def store(self, batch: EventBatch) -> None:
        """Stores a batch as the ingest thread does, and tells the flusher."""
        payload = batch_to_proto(batch).SerializeToString()
        last = batch.first_seq + len(batch.events) - 1
        stored: Stored = (batch.run_key, batch.client_id, batch.job, batch.first_seq, last, payload)
        Queue(self.connection).store([stored])
        self.flusher.stored(batch.run_key, len(batch.events))

    def cycle(self) -> bool:
        """One cycle as the flusher's loop runs it; True when work is left."""
        try:
            return self.flusher._cycle(False)
        except Killed:
            self.restart()
            return True
        except Exception:  # the loop counts it and goes on (server/flush/flusher.py)
            return True

    def left(self) -> int:
        """Batches not yet written."""
        return Queue(self.connection).flushable_count()

    @property
    def connection(self) -> sqlite3.Connection:
        assert self.conn is not None, "the queue file is closed"
        return self.conn

    def close(self) -> None:
        self.connection.close()


def fast_clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Runs the flusher's clock ahead by ``.ahead_s`` (a test passes every backoff and pause
    by adding to it between cycles); no call is retried in place."""
    clock = SimpleNamespace(ahead_s=0.0)
    fake_time = SimpleNamespace(
        monotonic=lambda: time.monotonic() + clock.ahead_s, perf_counter=time.perf_counter
    )
    monkeypatch.setattr(flusher, "time", fake_time)
    monkeypatch.setattr(backoff, "time", fake_time)
    monkeypatch.setattr(outcomes, "time", fake_time)
    monkeypatch.setattr(retry, "RETRY_WINDOW_S", -1.0)
    return clock
