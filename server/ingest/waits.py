"""Calls that wait for news of a run, answered the moment it comes rather than at their next
look: a GetRun waits for the run's MLflow id (a flusher of this receiver learns it), so that a
client's ``start_run`` returns one MLflow call after the run exists; a read through the
receiver waits for its caller's writes to reach MLflow (a flusher writes them), so that it
goes to MLflow one call after the writes. News from elsewhere (a fleet's other flushers) is
looked for again every ``_LOOK_S`` at most."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

_LOOK_S = 0.05


class KeyWaits:
    """Calls waiting for news of runs, by owned run key. ``known`` may be called from any
    thread; ``wait`` runs on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: defaultdict[str, list[asyncio.Future[None]]] = defaultdict(list)

    def known(self, key: str) -> None:
        """There is news of the run (called by the flusher's thread)."""
        with self._lock:
            futures = self._waiting.pop(key, [])
        for future in futures:
            future.get_loop().call_soon_threadsafe(_wake, future)

    async def wait(self, key: str, timeout_s: float) -> None:
        """Returns when ``known(key)`` is called, or after ``timeout_s`` (at most ``_LOOK_S``:
        the caller looks the id up again)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiting[key].append(future)
        try:
            await asyncio.wait_for(future, min(timeout_s, _LOOK_S))
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiting = self._waiting.get(key)
                if waiting is not None and future in waiting:
                    waiting.remove(future)
                    if not waiting:
                        del self._waiting[key]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FlushWaits(KeyWaits):
    """Reads waiting for their callers' writes, woken as a flush observer
    (server/flush/progress.py ``FlushObserver``) at every step of a run into MLflow."""

    def flushed(self, run_key: str, last_seq: int, events: int, seconds: float) -> None:
        """A run's events up to ``last_seq`` reached MLflow."""
        self.known(run_key)

    def dead_lettered(self, run_key: str, events: int = 1) -> None:
        """A run's events were refused for good, or the run is quarantined: no more to wait."""
        self.known(run_key)
