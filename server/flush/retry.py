"""Retrying MLflow calls: tenacity with backoff and jitter inside a window, and a shutdown
deadline that cuts every backoff short."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from server.flush.refusals import RunMissing, RunRefused, is_permanent
from server.flush.run_creation import RunNotCreated
from server.flush.sink import ExperimentDeleted

_logger = logging.getLogger(__name__)

RETRY_WINDOW_S = 5.0
"""How long one call is retried in place. Then its error goes up to the flush cycle, which
moves on to the other runs and tries this one again after a backoff (server/flush/flusher.py),
so one run's trouble holds the others back by one window at most."""
_NOT_RETRIED = (RunNotCreated, RunRefused, RunMissing, ExperimentDeleted)
T = TypeVar("T")


class Stopping(Exception):
    """The shutdown deadline passed while MLflow was failing."""


class Retrier:
    """Calls MLflow, retrying what may succeed later, until a window or the deadline passes.

    Args:
        on_error: Told of every failed attempt that will be retried.
    """

    def __init__(self, on_error: Callable[[BaseException | None], None]) -> None:
        self._on_error = on_error
        self._deadline = float("inf")
        self._deadline_moved = threading.Event()

    def stop_at(self, deadline: float) -> None:
        """Sets the shutdown deadline (``time.monotonic()``); backoffs end by then."""
        self._deadline = deadline
        self._deadline_moved.set()

    def out_of_time(self) -> bool:
        """Whether the shutdown deadline has passed."""
        return time.monotonic() >= self._deadline

    def __call__(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)``, retried on transient errors.

        Raises:
            Stopping: The deadline passed; the call's own error otherwise.
        """

        def give_up(state: tenacity.RetryCallState) -> bool:
            return self.out_of_time() or (state.seconds_since_start or 0.0) > RETRY_WINDOW_S

        def note(state: tenacity.RetryCallState) -> None:
            self._on_error(state.outcome.exception() if state.outcome else None)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: not is_permanent(e) and not isinstance(e, _NOT_RETRIED)
            ),
            wait=tenacity.wait_exponential(multiplier=0.2, max=10.0) + tenacity.wait_random(0, 0.5),
            stop=give_up,
            sleep=self._sleep,
            before_sleep=note,
            reraise=True,
        )
        try:
            return retrying(fn, *args)
        except Exception:
            if self.out_of_time():
                raise Stopping from None
            raise

    def _sleep(self, seconds: float) -> None:
        # A backoff ends early when shutdown sets a deadline that comes sooner.
        end = time.monotonic() + seconds
        while (left := min(end, self._deadline) - time.monotonic()) > 0:
            if self._deadline_moved.wait(left):
                self._deadline_moved.clear()
