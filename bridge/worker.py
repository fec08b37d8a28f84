"""The one guarded background worker every loop of the receiver and the client runs on.

A worker is a named daemon thread around a loop body: started once, woken by :meth:`wake`,
stopped with a deadline (:meth:`stop` never waits past it, and never for a thread that is
gone). An exception the body did not expect is logged with its traceback, counted, and then
either restarts the body (:attr:`OnFailure.RESTART`: for loops whose state is re-read from
durable storage on every pass) or leaves the worker failed (:attr:`OnFailure.FAIL`: for loops
whose in-memory state can no longer be trusted); a failed worker names itself and its error in
:attr:`Worker.failure`, which the receiver's health, ``status`` and ``/metrics`` show.

The body gets the worker and loops until ``worker.stopping`` is set, waiting with
:meth:`Worker.wait` (the flush interval as its timeout, OTel's BatchProcessor shape).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator

_logger = logging.getLogger(__name__)

RESTART_PAUSE_S = 1.0
"""A restarted body waits this long first (a stop cuts it short): a fault that repeats at
once never spins a core."""
MAX_RESTART_PAUSE_S = 30.0
"""The pause doubles while the body keeps failing within this long of its restart, up to this:
a fault that repeats for hours costs a log line every half minute, not every second."""


def restart_pause(base_s: float, max_s: float, streak: int) -> float:
    """The pause before the ``streak``-th restart in a row (1 for the first)."""
    return min(max_s, base_s * 2.0 ** max(0, streak - 1))


class OnFailure(enum.Enum):
    """What a worker does after an exception its body did not expect."""

    RESTART = "restart"
    """Log, count, run the body again after :data:`RESTART_PAUSE_S`."""
    FAIL = "fail"
    """Log, count, end: the worker is failed and its process says so (health NOT_SERVING)."""


class Worker:
    """A guarded background loop.

    Args:
        name: The worker's name, as health, ``status`` and ``/metrics`` show it.
        body: The loop; it returns when ``worker.stopping`` is set and its work is done.
        on_failure: Restart the body, or leave the worker failed.
        failed: Called (on the worker's thread) once the worker has failed for good, after
            :attr:`failure` is set: refuse what would wait for it, turn health.
        restart_pause_s: The pause before a first restart; it doubles while the body keeps
            failing soon after its restart, up to ``max_restart_pause_s``.
        max_restart_pause_s: The longest pause, and how long a body must run before a
            failure counts as a new fault (its pause starts again from ``restart_pause_s``).
    """

    def __init__(
        self,
        name: str,
        body: Callable[[Worker], None],
        *,
        on_failure: OnFailure,
        failed: Callable[[Worker], None] | None = None,
        restart_pause_s: float = RESTART_PAUSE_S,
        max_restart_pause_s: float = MAX_RESTART_PAUSE_S,
    ) -> None:
        self.name = name
        self.on_failure = on_failure
        self._body = body
        self._failed = failed
        self.restart_pause_s = restart_pause_s
        """The pause before a first restart (a test of a worker's owner may shorten it)."""
        self._max_restart_pause_s = max_restart_pause_s
        self._reset()

    def _reset(self) -> None:
        self._woken = threading.Event()
        self.stopping = threading.Event()
        """Set by :meth:`stop`: the body finishes what it must and returns."""
        self._thread: threading.Thread | None = None
        self.failure = ""
        """"" while the worker is fine; its last unexpected error once it has failed for good."""
        self.last_error = ""
        """The last unexpected error (a restarted worker keeps it for ``status``)."""
        self.restarts = 0
        """Unexpected exceptions the worker restarted after."""

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's thread does not exist here; start over, unstarted."""
        self._reset()

    def start(self) -> None:
        """Starts the thread (once; a second call does nothing)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"trackbridge-{self.name}", daemon=True
        )
        self._thread.start()

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran."""
        return self._thread is not None

    @property
    def alive(self) -> bool:
        """Whether the thread runs (not before start, not after it ended or failed)."""
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Wakes the body's :meth:`wait` early."""
        self._woken.set()

    def wait(self, timeout_s: float) -> bool:
        """Waits until woken or ``timeout_s`` passed; True when woken (the wake is consumed)."""
        woken = self._woken.wait(max(0.0, timeout_s))
        self._woken.clear()
        return woken

    def stop(self, deadline: float) -> bool:
        """Asks the body to end and waits for it until ``deadline`` (``time.monotonic()``);
        True when the thread has ended (or never ran)."""
        self.stopping.set()
        self._woken.set()
        return self.join(deadline)

    def join(self, deadline: float) -> bool:
        """Waits for the thread until ``deadline``; True when it has ended (or never ran)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return thread is None
        thread.join(max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()

    def _run(self) -> None:
        streak = 0  # failures in a row, each soon after the restart before it
        while True:
            began = time.monotonic()
            try:
                self._body(self)
                return
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                again = error == self.last_error and streak > 0
                self.last_error = error
                if self.on_failure is OnFailure.RESTART and not self.stopping.is_set():
                    self.restarts += 1
                    ran_s = time.monotonic() - began
                    streak = streak + 1 if ran_s < self._max_restart_pause_s else 1
                    pause_s = restart_pause(self.restart_pause_s, self._max_restart_pause_s, streak)
                    if again:  # the same fault again: one line, the traceback was logged
                        _logger.error(
                            "worker %s failed again (%s, %d in a row); restarting it in %g s",
                            self.name,
                            error,
                            streak,
                            pause_s,
                        )
                    else:
                        _logger.exception(
                            "worker %s failed; restarting it in %g s", self.name, pause_s
                        )
                    # A stop during the pause still runs the body once more, to finish its
                    # work on the way out (a second failure then ends the worker).
                    self.stopping.wait(pause_s)
                    self._woken.set()  # the restarted body does its work at once, not a tick late
                    continue
                self.failure = error
                _logger.exception("worker %s failed; it stays stopped", self.name)
                if self._failed is not None:
                    try:
                        self._failed(self)
                    except Exception:
                        _logger.exception("worker %s: reporting its failure failed", self.name)
                return


class Workers:
    """The workers of one process, for its health, ``status`` and ``/metrics``."""

    def __init__(self) -> None:
        self._workers: list[Worker] = []

    def add(self, worker: Worker) -> Worker:
        """Adds a worker (in start order; stop goes in the order the owner chooses)."""
        self._workers.append(worker)
        return worker

    def __iter__(self) -> Iterator[Worker]:
        return iter(list(self._workers))

    def failed(self) -> dict[str, str]:
        """Failed workers by name, with their errors."""
        return {w.name: w.failure for w in self._workers if w.failure}

    def restarts(self) -> dict[str, int]:
        """Each worker's restarts so far."""
        return {w.name: w.restarts for w in self._workers}
