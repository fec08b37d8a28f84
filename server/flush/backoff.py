"""When the flusher tries a failing run again, and when it tries anything again.

A run whose write failed waits a backoff of its own (0.5 s doubling to 10 s, with jitter) while
the others go on. When MLflow fails for everyone, the whole flusher pauses on the same schedule,
asking MLflow nothing meanwhile. Owned by the flusher's thread (pool threads report outcomes).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

from server.flush.state import RunState

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0


class Backoffs:
    """Each failing run's next try (on its :class:`RunState`), and the pause of everyone."""

    def __init__(self) -> None:
        self.paused_until = 0.0
        """No run is tried before this (``time.monotonic()``)."""
        self._pauses = 0
        self._random = random.Random()  # jitter; never the process's global generator

    def _delay(self, tries: int) -> float:
        base: float = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** (tries - 1))
        return base * self._random.uniform(0.8, 1.2)

    def run_failed(self, state: RunState) -> None:
        """A write of the run failed: it waits, the others go on."""
        state.failures += 1
        state.retry_at = time.monotonic() + self._delay(state.failures)

    def pause(self, runs: Iterable[RunState]) -> None:
        """MLflow fails for every run: everyone waits, rather than each run in turn."""
        self._pauses += 1
        self.paused_until = time.monotonic() + self._delay(self._pauses)
        for state in runs:
            state.retry_at, state.failures = 0.0, 0

    def all_well(self) -> None:
        """A cycle went through without a failure: the next pause starts short again."""
        self._pauses = 0
