"""When the flusher tries a failing run again, and when it tries anything again.

A run whose write failed waits a backoff of its own (0.5 s doubling to 10 s, with jitter) while
the others go on. When MLflow fails for everyone, the whole flusher pauses on the same schedule,
asking MLflow nothing meanwhile. Owned by the flusher's thread (pool threads report outcomes).
"""

from __future__ import annotations

import random
import time

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0


class Backoffs:
    """Each failing run's next try, and the pause of everyone."""

    def __init__(self) -> None:
        self.retry_at: dict[str, float] = {}
        """When each backing-off (or waiting) run may be tried again (``time.monotonic()``)."""
        self.failures: dict[str, int] = {}
        """Runs whose writes failed, and how many times in a row."""
        self.paused_until = 0.0
        """No run is tried before this (``time.monotonic()``)."""
        self._pauses = 0
        self._random = random.Random()  # jitter; never the process's global generator

    def _delay(self, tries: int) -> float:
        base: float = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** (tries - 1))
        return base * self._random.uniform(0.8, 1.2)

    def run_failed(self, run_key: str) -> None:
        """A write of the run failed: it waits, the others go on."""
        self.failures[run_key] = tries = self.failures.get(run_key, 0) + 1
        self.retry_at[run_key] = time.monotonic() + self._delay(tries)

    def pause(self) -> None:
        """MLflow fails for every run: everyone waits, rather than each run in turn."""
        self._pauses += 1
        self.paused_until = time.monotonic() + self._delay(self._pauses)
        self.retry_at.clear()
        self.failures.clear()

    def all_well(self) -> None:
        """A cycle went through without a failure: the next pause starts short again."""
        self._pauses = 0
