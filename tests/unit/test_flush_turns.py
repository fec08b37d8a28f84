"""The flusher's turns run on pool threads and change nothing the flusher shares: each returns
an outcome (server/flush/pool.py ``Turn``), and the flusher's own thread applies it to the run's
one state object (back-off, quarantine). In process, with the run writer failing on command."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, RunStart
from server.flush.flusher import Flusher
from server.flush.pool import CALL_ENTRIES, SLICE_ENTRIES, Budget, Turn, TurnResult
from server.flush.refusals import RunRefused
from server.flush.sink import MlflowSink
from server.flush.state import RunState
from server.queue.sqlite import Backlog, Queue, connect

pytestmark = pytest.mark.timeout(60)


def _flusher(tmp_path: Path) -> Flusher:
    conn = connect(tmp_path / "queue.db")
    payload = batch_to_proto(EventBatch("site", "job", "run-a", 1, (RunStart(),)))
    Queue(conn).store([("run-a", "site", "job", 1, 1, payload.SerializeToString())])
    return Flusher(
        Queue(conn),
        MlflowSink("http://127.0.0.1:9"),  # never called: the writer fails on command
        interval_s=1.0,
        on_run=lambda *_: None,
        backlog=Backlog(0),
        last_seen={},
        lease_s=600.0,
        workers=3,
    )


def _on_a_pool_thread(flusher: Flusher, state: RunState) -> TurnResult:
    results: list[TurnResult] = []
    thread = threading.Thread(target=lambda: results.append(flusher._turn(state)))
    thread.start()
    thread.join(30)
    return results[0]


@pytest.mark.parametrize(
    ("fault", "turn"),
    [(RunRefused("deleted"), Turn.REFUSED), (ConnectionError("MLflow is down"), Turn.FAILED)],
)
def test_a_turn_returns_its_outcome_and_the_flusher_applies_it(
    tmp_path: Path, fault: Exception, turn: Turn
) -> None:
    flusher = _flusher(tmp_path)

    def flush_run(run_key: str, budget: object) -> bool:
        raise fault

    flusher._writer.flush_run = flush_run  # type: ignore[method-assign]
    state = flusher._runs.state("run-a")
    result = _on_a_pool_thread(flusher, state)
    assert result == TurnResult(turn, fault)
    assert (state.retry_at, state.failures, state.quarantine) == (0.0, 0, "")  # untouched

    assert flusher._outcomes.apply(state, result) is turn  # on the flusher's thread
    if turn is Turn.REFUSED:
        assert state.quarantine == "deleted"
        assert flusher._queue.runs_with_pending() == []  # held in the queue
    else:
        assert state.failures == 1 and state.retry_at > 0
        assert flusher.last_error == "ConnectionError: MLflow is down"


def test_a_turn_that_wrote_clears_the_runs_back_off(tmp_path: Path) -> None:
    flusher = _flusher(tmp_path)
    flusher._writer.flush_run = lambda run_key, budget: True  # type: ignore[method-assign]
    state = flusher._runs.state("run-a")
    state.retry_at, state.failures = 1.0, 3
    result = _on_a_pool_thread(flusher, state)
    assert result == TurnResult(Turn.MORE)
    assert state.failures == 3  # untouched until applied
    assert flusher._outcomes.apply(state, result) is Turn.MORE
    assert (state.retry_at, state.failures, state.gave_way) == (0.0, 0, True)


def test_a_slice_is_cut_on_whole_calls_and_ends_below_one_call() -> None:
    """A slice is written in full log_batch calls: after a run start (one entry) the slice's
    entries are cut at one call, not at the 1,997 left (999 + 998 would follow, or with a
    2,000 slice 999 + 999 + 2); what is left below a call ends the slice when others wait."""
    waiting = [True]
    budget = Budget(float("inf"), lambda: waiting[0], lambda: 0.0)
    assert budget.cut == SLICE_ENTRIES == 2 * CALL_ENTRIES
    assert not budget.spend(1)  # a run start
    assert budget.cut == CALL_ENTRIES
    assert budget.spend(CALL_ENTRIES)  # CALL_ENTRIES - 1 left: the slice ends, another waits
    waiting[0] = False
    assert not budget.spend(0)  # nobody waits: another slice
    assert budget.cut == SLICE_ENTRIES
    assert not budget.spend(CALL_ENTRIES)
    assert budget.cut == CALL_ENTRIES


@pytest.mark.parametrize(("workers", "gives_way"), [(2, True), (3, False)])
def test_a_turn_gives_way_after_a_slice_only_when_a_run_waits(
    tmp_path: Path, workers: int, gives_way: bool
) -> None:
    """With a writer for every run due, a turn goes on past a slice (each slice is a commit):
    it gives way when a run waits for a writer, or when events arrive for a run outside the
    cycle; events of a run that has its turn already do not count."""
    conn = connect(tmp_path / "queue.db")
    queue = Queue(conn)
    for key in ("run-a", "run-b", "run-c"):
        payload = batch_to_proto(EventBatch("site", "job", key, 1, (RunStart(),)))
        queue.store([(key, "site", "job", 1, 1, payload.SerializeToString())])
        queue.set_mlflow_run(key, f"mlflow-{key}", "1")
    flusher = Flusher(
        queue, MlflowSink("http://127.0.0.1:9"), interval_s=1.0, on_run=lambda *_: None,
        backlog=Backlog(0), last_seen={}, lease_s=600.0, workers=workers,
    )  # fmt: skip
    seen: list[bool] = []

    def flush_run(run_key: str, budget: Budget) -> bool:
        if run_key == "run-a":
            seen.append(budget._others_wait())
            flusher._arrivals.stored("run-b", 5)  # its turn is in this cycle
            seen.append(budget._others_wait())
            flusher._arrivals.stored("run-d", 5)  # not pending as the cycle began
            seen.append(budget._others_wait())
        return False

    flusher._writer.flush_run = flush_run  # type: ignore[method-assign]
    try:
        flusher._cycle(False)
    finally:
        flusher._pool.close()
    assert seen == [gives_way, gives_way, True]
