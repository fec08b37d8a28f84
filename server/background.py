"""A receiver on its own event-loop thread, for embedding (the demo, benchmarks, tests).

The loop runs on a :class:`~bridge.worker.Worker` (FAIL): it is the embedded receiver's whole
process loop (gRPC, the live view), the role ``asyncio.run`` plays for ``trackbridge serve``.
An exception in one of its callbacks is asyncio's to log and the loop goes on; the loop
ending any other way is logged with its traceback, and :meth:`BackgroundReceiver.stop` then
returns False at once instead of waiting for a loop that is gone. It is not in the
receiver's own workers: nothing of the receiver can answer health without it.
"""

from __future__ import annotations

import asyncio
import time

from bridge.worker import OnFailure, Worker
from server.config import ReceiverConfig
from server.heap import freeze_startup_heap
from server.receiver import Receiver


class BackgroundReceiver:
    """A receiver on its own event-loop thread, for embedding (the demo, tests).

    ``owns_process``: the process is the receiver's, as ``trackbridge serve``'s is (the demo,
    the benchmarks): once started, the start-up heap is frozen as serve freezes it
    (server/heap.py). Never in a process that has other work (a test session)."""

    def __init__(self, config: ReceiverConfig, *, owns_process: bool = False) -> None:
        self.receiver = Receiver(config)
        self._owns_process = owns_process
        self._loop = asyncio.new_event_loop()
        self.worker = Worker("receiver", self._run, on_failure=OnFailure.FAIL)

    def _run(self, worker: Worker) -> None:
        self._loop.run_forever()
        if not worker.stopping.is_set():
            raise RuntimeError("the embedded receiver's event loop stopped on its own")

    def start(self) -> int:
        """Starts serving; returns the bound port."""
        self.worker.start()
        future = asyncio.run_coroutine_threadsafe(self.receiver.start(), self._loop)
        port = future.result(timeout=60)
        if self._owns_process:
            freeze_startup_heap()
        return port

    def stop(self) -> bool:
        """Drains and stops; returns whether everything reached MLflow (False at once when
        the loop has failed)."""
        if self.worker.failure or not self.worker.alive:
            self.worker.join(time.monotonic() + 10)
            if not self._loop.is_closed():
                self._loop.close()
            return False
        future = asyncio.run_coroutine_threadsafe(self.receiver.stop(), self._loop)
        try:
            return future.result(timeout=self.receiver.config.shutdown_timeout_s + 30)
        finally:
            self.worker.stopping.set()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self.worker.join(time.monotonic() + 10)
            self._loop.close()
