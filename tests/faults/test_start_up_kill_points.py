"""The experiment a script chose survives a receiver killed at any MLflow call of a run's
start-up, in process (issue 23): the deterministic half of tests/faults/test_experiment_startup.py,
which kills a real receiver around the creation calls only.

The flusher is built as the receiver builds it, over a real SQLite queue file, with the fake
MLflow of tests/support/fake_mlflow.py behind the real ``MlflowSink``: every call of the run's
start-up in turn (the experiment looked for and created, the job's parent run, the client's run
looked for, created and kept) kills the receiver before the call, or after MLflow applied it
with the answer lost. A kill is what ``kill -9`` leaves: the flusher object abandoned, the queue
file reopened by a new one (what the queue committed stays), MLflow's state kept. The run's
later batches arrive before the kill, or only after the restart (its client resends them).
Each case: the run once, whole, ended, in the experiment its start chose.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bridge.events import Event, EventBatch, Metric, RunEnd, RunStart, RunStatus
from server.flush import backoff
from tests.support.fake_mlflow import FakeMlflow, FakeRun
from tests.support.queued_flusher import QueuedFlusher, fast_clock

pytestmark = pytest.mark.timeout(300)

JOB = "job"
POINTS = 20
MAX_CYCLES = 40
"""Cycles a case may take to write everything (far more than any needs)."""


@pytest.fixture(autouse=True)
def _fast_clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Every backoff has passed by the next cycle; no call is retried in place."""
    return fast_clock(monkeypatch)


def _batches(name: str, experiment: str, experiment_id: str) -> tuple[EventBatch, EventBatch]:
    """A script's run: its start alone (``start_run``), then its points and end; every batch
    names the experiment the start chose, as a client's do."""
    start = RunStart(experiment=experiment, run_name=name, experiment_id=experiment_id)
    rest: list[Event] = [Metric("x", float(i), i, 1000 + i) for i in range(POINTS)]
    rest.append(RunEnd(RunStatus.FINISHED, 5000))
    choice = {"experiment": experiment, "experiment_id": experiment_id}
    return (
        EventBatch("site", JOB, name, 1, (start,), **choice),
        EventBatch("site", JOB, name, 2, tuple(rest), **choice),
    )


class _Counting(FakeMlflow):
    """Notes how many calls came before the first ``log_batch`` (a start-up's end)."""

    first_log_batch: int | None = None

    def log_batch(self, run_id: str, *args: Any, **kw: Any) -> None:
        if self.first_log_batch is None:
            self.first_log_batch = self.calls
        super().log_batch(run_id, *args, **kw)


def _play(
    tmp: Path, clock: SimpleNamespace, schedule: list[str], *, zero: bool, late: bool, warm: bool
) -> tuple[_Counting, FakeRun]:
    """One case: a run started in an experiment of its own under ``schedule`` (one action per
    MLflow call of the case); ``zero``: the experiment was made through the receiver's API
    first (zero-code's ``set_experiment``), the start names its id; ``late``: the points come
    after the first cycle; ``warm``: an earlier run of the job was written first (its parent
    run exists). Returns MLflow and the run."""
    mlflow = _Counting()
    receiver = QueuedFlusher(tmp / "queue.db", mlflow)
    if warm:
        for batch in _batches("earlier", "earlier-experiment", ""):
            receiver.store(batch)
        _drain(receiver, clock)
    experiment_id = mlflow.create_experiment("chosen") if zero else ""
    mlflow.schedule = ["ok"] * mlflow.calls + schedule
    mlflow.first_log_batch = None
    first_call = mlflow.calls
    start, rest = _batches("case", "chosen", experiment_id)
    receiver.store(start)
    if not late:
        receiver.store(rest)
    receiver.cycle()
    clock.ahead_s += backoff.BACKOFF_MAX_S * 1.3
    if late:
        receiver.store(rest)
    _drain(receiver, clock)
    receiver.close()
    if mlflow.first_log_batch is not None:
        mlflow.first_log_batch -= first_call
    runs = [
        r for r in mlflow.runs.values()
        if r.lifecycle_stage == "active" and r.tags.get("trackbridge.run_key") == "case"
    ]  # fmt: skip
    assert len(runs) == 1, f"the run made {len(runs)} times"
    return mlflow, runs[0]


def _drain(receiver: QueuedFlusher, clock: SimpleNamespace) -> None:
    for _ in range(MAX_CYCLES):
        receiver.cycle()
        clock.ahead_s += backoff.BACKOFF_MAX_S * 1.3
        if receiver.left() == 0:
            return
    raise AssertionError(f"not written in {MAX_CYCLES} cycles: {receiver.left()} batches left")


@pytest.mark.parametrize("warm", [False, True], ids=["first-run", "later-run"])
@pytest.mark.parametrize("zero", [False, True], ids=["swap", "zero"])
def test_a_kill_at_every_start_up_call_keeps_the_chosen_experiment(
    _fast_clock: SimpleNamespace, tmp_path: Path, zero: bool, warm: bool
) -> None:
    """A kill before and after each MLflow call of the start-up (and of the first points),
    the points with the start or only after the restart: the run once, whole, FINISHED, in
    the experiment its start chose. A receiver's found-again search that skips the chosen
    experiment makes the run twice."""
    clean, _ = _play(tmp_path, _fast_clock, [], zero=zero, late=False, warm=warm)
    calls = clean.first_log_batch  # the start-up's calls: a kill at each, and at the points'
    assert calls is not None and calls >= 3, calls  # at least: the run created, found, kept
    for k in range(calls + 1):
        for action in ("kill", "kill_after"):
            for late in (False, True):
                case = tmp_path / f"{k}-{action}-{late}"
                case.mkdir()
                mlflow, run = _play(
                    case, _fast_clock, ["ok"] * k + [action], zero=zero, late=late, warm=warm
                )
                where = mlflow.experiments[run.experiment_id].name
                assert where == "chosen", (k, action, late, where)
                assert [m[1] for m in run.metrics] == [float(i) for i in range(POINTS)]
                assert run.status == "FINISHED" and run.end_time == 5000, (k, action, late)
