"""server/ingest/waits.py: a GetRun waiting for a run's MLflow id, and a read waiting for its
caller's writes, are woken by the flusher's thread the moment there is news of the run, and
otherwise look again within a bound."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from server.flush.progress import Observers
from server.ingest import waits as key_waits
from server.ingest.waits import FlushWaits, KeyWaits

pytestmark = pytest.mark.timeout(30)


def test_a_waiter_is_woken_from_another_thread_when_its_id_is_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(key_waits, "_LOOK_S", 3600.0)  # only the wake-up ends a wait here
    waits = KeyWaits()

    async def main() -> bool:
        waiting = asyncio.ensure_future(waits.wait("c/run-1", 3600.0))
        await asyncio.sleep(0)  # it is registered
        other = asyncio.ensure_future(waits.wait("c/run-2", 3600.0))
        await asyncio.sleep(0)
        threading.Thread(target=waits.known, args=("c/run-1",)).start()
        done, _ = await asyncio.wait({waiting, other}, return_when=asyncio.FIRST_COMPLETED)
        return waiting in done and other not in done

    assert asyncio.run(main())
    assert not waits._waiting  # the other wait was cancelled and cleaned up


def test_a_waiter_not_told_returns_to_look_again_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(key_waits, "_LOOK_S", 0.01)
    waits = KeyWaits()
    asyncio.run(waits.wait("c/run-1", 3600.0))  # returns (bounded by _LOOK_S), not hangs
    assert not waits._waiting
    waits.known("c/run-1")  # nobody waits: nothing to wake


def test_a_read_waiting_for_writes_is_woken_by_the_flushers_progress_through_the_fan_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flusher tells its observers (the live view and the reads' waits, server/flush/
    progress.py ``Observers``) of each step of a run into MLflow; a read waiting on that run
    wakes then, one waiting on another run does not. A run quarantined or refused for good
    (``dead_lettered``) wakes it too: there is nothing more to wait for."""
    monkeypatch.setattr(key_waits, "_LOOK_S", 3600.0)
    flushes = FlushWaits()
    told: list[tuple[str, str]] = []

    class _Live:
        def flushed(self, run_key: str, last_seq: int, events: int, seconds: float) -> None:
            told.append(("flushed", run_key))

        def dead_lettered(self, run_key: str, events: int = 1) -> None:
            told.append(("dead", run_key))

    observers = Observers(_Live(), flushes)

    async def woken_by(news: Callable[[], None]) -> bool:
        waiting = asyncio.ensure_future(flushes.wait("c/run-1", 3600.0))
        other = asyncio.ensure_future(flushes.wait("c/run-2", 3600.0))
        await asyncio.sleep(0)  # both are registered
        threading.Thread(target=news).start()
        done, _ = await asyncio.wait({waiting, other}, return_when=asyncio.FIRST_COMPLETED)
        return waiting in done and other not in done

    assert asyncio.run(woken_by(lambda: observers.flushed("c/run-1", 7, 3, 0.01)))
    assert asyncio.run(woken_by(lambda: observers.dead_lettered("c/run-1")))
    assert told == [("flushed", "c/run-1"), ("dead", "c/run-1")]
    assert not flushes._waiting
