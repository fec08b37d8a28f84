"""server/ingest/run_ids.py: a GetRun waiting for a run's MLflow id is woken by the flusher's
thread the moment the id is known, and otherwise looks again within a bound."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.ingest import run_ids
from server.ingest.run_ids import RunIdWaits

pytestmark = pytest.mark.timeout(30)


def test_a_waiter_is_woken_from_another_thread_when_its_id_is_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_ids, "_LOOK_S", 3600.0)  # only the wake-up ends a wait here
    waits = RunIdWaits()

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
    monkeypatch.setattr(run_ids, "_LOOK_S", 0.01)
    waits = RunIdWaits()
    asyncio.run(waits.wait("c/run-1", 3600.0))  # returns (bounded by _LOOK_S), not hangs
    assert not waits._waiting
    waits.known("c/run-1")  # nobody waits: nothing to wake
