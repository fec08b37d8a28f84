"""The guarded worker (bridge/worker.py) in process: a failing body restarts or fails as told,
with its traceback logged; stop keeps to its deadline; a forked child starts it afresh."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from bridge.worker import OnFailure, Worker, Workers, restart_pause
from tests.support.procs import wait_until

pytestmark = pytest.mark.timeout(60)


def test_a_restarted_worker_runs_its_body_again(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []

    def body(worker: Worker) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ValueError(f"fault {len(runs)}")
        worker.wait(30)  # until stopped

    worker = Worker("w", body, on_failure=OnFailure.RESTART, restart_pause_s=0.01)
    with caplog.at_level(logging.ERROR):
        worker.start()
        wait_until(lambda: len(runs) == 3, 10, what="two restarts")
    assert worker.restarts == 2
    assert not worker.failure
    assert worker.last_error == "ValueError: fault 2"
    assert all(r.exc_info is not None for r in caplog.records)  # the traceback
    assert worker.stop(time.monotonic() + 10)
    assert not worker.alive


def test_the_pause_doubles_while_a_fault_repeats_up_to_its_ceiling() -> None:
    assert [restart_pause(1.0, 30.0, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_repeated_fault_is_logged_in_full_once_then_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    def body(worker: Worker) -> None:
        runs.append(1)
        if len(runs) <= 3:
            raise ValueError("the same fault")
        if len(runs) == 4:
            raise ValueError("another fault")
        worker.wait(30)  # until stopped

    worker = Worker(
        "w", body, on_failure=OnFailure.RESTART, restart_pause_s=0.01, max_restart_pause_s=10
    )
    with caplog.at_level(logging.ERROR):
        worker.start()
        wait_until(lambda: len(runs) == 5, 10, what="four restarts")
    assert worker.stop(time.monotonic() + 10)
    said = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    again = "worker w failed again (ValueError: the same fault, {} in a row); restarting it in {} s"
    assert said == [
        ("worker w failed; restarting it in 0.01 s", True),
        (again.format(2, 0.02), False),
        (again.format(3, 0.04), False),
        ("worker w failed; restarting it in 0.08 s", True),  # a new fault: its traceback
    ]
    assert worker.restarts == 4


def test_a_failing_worker_reports_once_and_ends() -> None:
    reported = threading.Event()
    workers = Workers()

    def body(_worker: Worker) -> None:
        raise KeyError("lost")

    worker = workers.add(
        Worker("w", body, on_failure=OnFailure.FAIL, failed=lambda _w: reported.set())
    )
    worker.start()
    assert reported.wait(10)
    assert workers.failed() == {"w": "KeyError: 'lost'"}
    assert worker.join(time.monotonic() + 10)
    assert worker.stop(time.monotonic())  # a dead thread is not waited for


def test_stop_keeps_to_its_deadline() -> None:
    release = threading.Event()
    worker = Worker("stuck", lambda _w: release.wait(30), on_failure=OnFailure.FAIL)
    worker.start()
    assert not worker.stop(time.monotonic() + 0.05)
    release.set()
    assert worker.join(time.monotonic() + 10)


def test_after_a_fork_the_worker_starts_afresh() -> None:
    worker = Worker("w", lambda w: None, on_failure=OnFailure.RESTART)
    worker.start()
    assert worker.join(time.monotonic() + 10)
    worker.reset_after_fork()
    assert not worker.started
    assert worker.restarts == 0
