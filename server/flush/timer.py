"""The lifecycle both flushers share (:class:`~server.flush.flusher.Flusher` for MLflow,
:class:`~server.flush.files_only.FileFlusher` for the event sinks alone).

One guarded worker (``flusher``, :attr:`~bridge.worker.OnFailure.RESTART`: every pass reads
what is pending from the queue, so a fresh start loses nothing) runs a pass every flush
interval, counted from the start of the previous one so that a slow pass does not stretch the
interval on top of itself; at once when woken (:meth:`FlushTimer.flush_soon`: a full batch, a
new run, a reader waiting); at once again when a pass left work. Once stopping, passes go on
until one says the flusher is done (drained, or out of its shutdown budget).
"""

from __future__ import annotations

import abc
import enum
import time

from bridge.worker import OnFailure, Worker


class Pass(enum.Enum):
    """What a flusher's pass left."""

    IDLE = "idle"
    """Nothing to do before the next tick or wake."""
    MORE = "more"
    """Work is left: the next pass starts at once."""
    DONE = "done"
    """Stopping, and nothing more will be written (drained, or out of time): the worker ends."""


class FlushTimer(abc.ABC):
    """Start, wake, the flush interval's tick, stop: the flushers' common part.

    A subclass gives :meth:`_pass`; it owns what the pass writes.
    """

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self.worker = Worker("flusher", self._loop, on_failure=OnFailure.RESTART)

    def start(self) -> None:
        """Starts the timer thread."""
        self.worker.start()

    @property
    def running(self) -> bool:
        """Whether the flusher's thread still runs (a stop that ran out of time)."""
        return self.worker.alive

    def flush_soon(self) -> None:
        """Asks for a pass now (a full batch, a new run, a client waiting to read)."""
        self.worker.wake()

    def _stop_timer(self, timeout_s: float) -> bool:
        """Asks the passes to finish, waits ``timeout_s`` (and one second for the pass in
        flight); True when the thread has ended."""
        return self.worker.stop(time.monotonic() + timeout_s + 1.0)

    def _loop(self, worker: Worker) -> None:
        next_tick = time.monotonic() + self._interval_s
        left = Pass.IDLE
        while True:
            if left is not Pass.MORE:
                worker.wait(next_tick - time.monotonic())
                next_tick = time.monotonic() + self._interval_s
            else:
                worker.wait(0.0)  # a wake during that pass asked for what this one does
            left = self._pass(worker.stopping.is_set())
            if left is Pass.DONE:
                return

    @abc.abstractmethod
    def _pass(self, stopping: bool) -> Pass:
        """One pass over what is pending; ``stopping`` once :meth:`_stop_timer` was called."""
