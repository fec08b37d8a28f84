"""The flusher's turns run on pool threads and change nothing the flusher shares: each returns
an outcome (server/flush/pool.py ``Turn``), and the flusher's own thread applies it (back-off,
quarantine). In process, with the run writer failing on command."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from server.flush.flusher import Flusher
from server.flush.pool import Turn, TurnResult
from server.flush.refusals import RunRefused
from server.flush.sink import MlflowSink
from server.queue.sqlite import Backlog, Queue, connect

pytestmark = pytest.mark.timeout(60)


def _flusher(tmp_path: Path) -> Flusher:
    conn = connect(tmp_path / "queue.db")
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


def _on_a_pool_thread(flusher: Flusher, run_key: str) -> TurnResult:
    results: list[TurnResult] = []
    thread = threading.Thread(target=lambda: results.append(flusher._turn(run_key)))
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
    quarantined: list[tuple[str, str]] = []

    def flush_run(run_key: str, budget: object) -> bool:
        raise fault

    flusher._writer.flush_run = flush_run  # type: ignore[method-assign]

    def quarantine(run_key: str, reason: str) -> None:
        quarantined.append((run_key, reason))

    flusher._quarantine = quarantine  # type: ignore[method-assign]
    result = _on_a_pool_thread(flusher, "run-a")
    assert result == TurnResult(turn, fault)
    assert flusher._retry_at == {} and flusher._failures == {} and quarantined == []

    assert flusher._apply("run-a", result) is turn  # on the flusher's thread
    if turn is Turn.REFUSED:
        assert quarantined == [("run-a", "deleted")]
    else:
        assert flusher._failures == {"run-a": 1}
        assert "run-a" in flusher._retry_at
        assert flusher.last_error == "ConnectionError: MLflow is down"


def test_a_turn_that_wrote_clears_the_runs_back_off(tmp_path: Path) -> None:
    flusher = _flusher(tmp_path)
    flusher._writer.flush_run = lambda run_key, budget: True  # type: ignore[method-assign]
    flusher._retry_at["run-a"], flusher._failures["run-a"] = 0.0, 3
    result = _on_a_pool_thread(flusher, "run-a")
    assert result == TurnResult(Turn.MORE)
    assert flusher._failures == {"run-a": 3}  # untouched until applied
    assert flusher._apply("run-a", result) is Turn.MORE
    assert flusher._retry_at == {} and flusher._failures == {}
