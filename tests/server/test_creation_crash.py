"""A receiver that dies at any MLflow call of a job's start-up (runs created together, each
kept, recorded, written, ended), then restarts on the same queue, puts every run once, whole,
in the experiment its start chose (issue 23). In process against a real ``mlflow server``:
the first life's MLflow client dies at the chosen call (it and every call after it raise, as
a killed process makes none), the second life is a new flusher on the same ``queue.db``."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from bridge.convert import batch_to_proto
from bridge.events import Event, EventBatch, Metric, RunEnd, RunStart, RunStatus
from server.flush import retry
from server.flush.flusher import Flusher
from server.flush.run_creation import TAG_PROVISIONAL
from server.flush.sink import MlflowSink
from server.queue.sqlite import Backlog, Queue, connect
from server.security.ownership import owned_key
from tests.support.mlflow_reads import TAG_CLIENT_ID
from tests.support.procs import MlflowServer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BASE_TS = 1_700_000_000_000
POINTS = 50
RECEIVER_ID = "receiver-under-test"
# (client, the experiment its start chooses: "" is the job's), several sharing one.
# "by-id" is named by MLflow's id too, as a zero-code client's start is (created one by one).
CHOICES = (
    ("site-a", "shared"),
    ("site-b", "shared"),
    ("site-c", "own"),
    ("site-d", ""),
    ("site-e", "by-id"),
)


class Killed(BaseException):
    """The receiver's process died here: nothing catches it, nothing after it runs."""


class DyingClient:
    """An MlflowClient that dies at the ``nth`` call of ``method`` (after the call reached
    MLflow when ``after``); from then on every call raises."""

    def __init__(self, client: Any, method: str, nth: int, *, after: bool) -> None:
        self._client = client
        self._method = method
        self._nth = nth
        self._after = after
        self._calls = 0
        self._lock = threading.Lock()
        self.dead = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                if self.dead:
                    raise Killed(name)
                dies = False
                if name == self._method:
                    self._calls += 1
                    dies = self._calls == self._nth
                if dies and not self._after:
                    self.dead = True
                    raise Killed(name)
            result = attr(*args, **kwargs)
            if dies:
                self.dead = True
                raise Killed(name)
            return result

        return call


def _flusher(path: Path, uri: str) -> tuple[Flusher, MlflowSink]:
    sink = MlflowSink(uri, receiver_id=RECEIVER_ID)
    flusher = Flusher(
        Queue(connect(path)),
        sink,
        interval_s=0.1,
        on_run=lambda *_: None,
        backlog=Backlog(0),
        last_seen={},
        lease_s=600.0,
        receiver_id=RECEIVER_ID,
    )
    return flusher, sink


def _store(path: Path, job: str, by_id: str) -> None:
    rows = []
    for client_id, choice in CHOICES:
        experiment = f"{job}-{choice}" if choice else ""
        run_key = uuid.uuid4().hex
        start = RunStart(experiment=experiment, run_name=client_id, start_time_ms=BASE_TS)
        if choice == "by-id":
            start = dataclasses.replace(start, experiment_id=by_id)
        events: tuple[Event, ...] = (
            start,
            *(Metric("x", float(i), i, BASE_TS + i) for i in range(POINTS)),
            RunEnd(RunStatus.FINISHED, BASE_TS + POINTS),
        )
        payload = batch_to_proto(EventBatch(client_id, job, run_key, 1, events))
        key = owned_key(client_id, run_key)
        rows.append((key, client_id, job, 1, len(events), payload.SerializeToString()))
    queue = Queue(connect(path))
    queue.store(rows)


@pytest.mark.parametrize(
    ("method", "nth", "after"),
    [
        ("search_runs", 1, False),  # the job's runs looked for: nothing created yet
        ("create_run", 1, True),  # one provisional run made
        ("create_run", 3, True),  # several, in both experiments
        ("search_runs", 2, False),  # all provisional, the second look not made
        ("delete_tag", 1, True),  # one run kept, the queue not told
        ("get_experiment", 1, False),  # the run named by id: its experiment being checked
        ("create_run", 7, True),  # later runs, one by one (the one named by id among them)
        ("search_runs", 5, False),  # a run made one by one, before its second look
        ("log_batch", 1, False),  # runs kept and recorded, no point written
        ("set_terminated", 1, False),  # points written, no run ended
    ],
)
def test_a_receiver_killed_while_creating_a_jobs_runs_keeps_each_in_its_experiment(
    mlflow_server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    nth: int,
    after: bool,
) -> None:
    job = f"crash-{method}-{nth}-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "queue.db"
    by_id = MlflowClient(mlflow_server.uri).create_experiment(f"{job}-by-id")
    _store(path, job, by_id)

    first, sink = _flusher(path, mlflow_server.uri)
    dying = DyingClient(sink._client, method, nth, after=after)
    sink._client = dying  # type: ignore[assignment]
    monkeypatch.setattr(retry, "RETRY_WINDOW_S", 0.0)  # a dead process retries nothing
    with pytest.raises(Killed):
        for _ in range(20):
            first._cycle(stopping=False)
    assert dying.dead
    monkeypatch.undo()

    second, _ = _flusher(path, mlflow_server.uri)
    queue = Queue(connect(path))

    def written() -> bool:
        second._cycle(stopping=False)
        return queue.pending_count() == 0

    wait_until(written, 120, interval_s=0.2, what="the restarted receiver to write the job")

    client = MlflowClient(mlflow_server.uri)
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    runs = client.search_runs(
        list(names), f"tags.`trackbridge.job` = '{job}' and tags.`trackbridge.role` = 'client'"
    )
    where = sorted((r.data.tags[TAG_CLIENT_ID], names[r.info.experiment_id]) for r in runs)
    chosen = [(cid, f"{job}-{choice}" if choice else job) for cid, choice in CHOICES]
    assert where == sorted(chosen)
    for run in runs:
        assert TAG_PROVISIONAL not in run.data.tags, run.info
        assert run.info.status == "FINISHED", run.info
        history = client.get_metric_history(run.info.run_id, "x")
        assert sorted({int(m.value) for m in history}) == list(range(POINTS)), run.info
