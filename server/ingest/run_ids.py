"""A GetRun that waits for the run's MLflow id: answered the moment a flusher of this receiver
learns it, so that a client's ``start_run`` returns one MLflow call after the run exists,
rather than at its next poll. Ids learned elsewhere (a fleet's other flushers) are looked up
again every ``_LOOK_S``."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

_LOOK_S = 0.05


class RunIdWaits:
    """GetRun calls waiting for run ids, by owned run key. ``known`` may be called from any
    thread; ``wait`` runs on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: defaultdict[str, list[asyncio.Future[None]]] = defaultdict(list)

    def known(self, key: str) -> None:
        """The run's MLflow id is known now (called by the flusher, through the receiver)."""
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
