"""How long the receiver asks each client to wait between publishes, from a budget of calls.

A client's sender publishes one call per run with news each time its linger runs out, so the
receiver's call rate is about the number of runs publishing over the linger they wait. The
receiver knows that number and the clients do not: it counts the runs heard in the last
``window_s`` and advises every client ``active_runs / budget_per_s`` seconds in its publish
ack, so that the calls it gets stay within its budget whatever the size of the fleet (5,000
calls/s and a thousand runs make the 0.2 s a writer always waited; a hundred make 20 ms). The
writer never waits less than its round-trip rule asks nor more than its ``linger_s``
(client_sdk/_linger.py). In fleet mode each receiver counts, and budgets, its own clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_BUDGET_PER_S = 5000.0
"""Publish calls per second a receiver advises its clients to stay within, together."""

WINDOW_S = 5.0
"""A run heard this recently counts as publishing (a writer waits 0.2 s at most)."""


class PublishPacer:
    """Counts the runs publishing recently and advises the linger that keeps to the budget."""

    def __init__(
        self,
        budget_per_s: float = DEFAULT_BUDGET_PER_S,
        *,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not budget_per_s > 0:
            raise ValueError(f"budget_per_s must be positive, got {budget_per_s!r}")
        self._budget_per_s = budget_per_s
        self._window_s = window_s
        self._clock = clock
        self._heard: dict[str, float] = {}
        self._pruned = clock()

    def heard(self, key: str) -> float:
        """Notes a publish of the run ``key``; returns the linger to advise, in seconds."""
        now = self._clock()
        self._heard[key] = now
        if now - self._pruned >= self._window_s:
            # Once a window, not per call: a thousand runs make this a thousand-entry walk.
            since = now - self._window_s
            self._heard = {k: t for k, t in self._heard.items() if t >= since}
            self._pruned = now
        return len(self._heard) / self._budget_per_s

    @property
    def active_runs(self) -> int:
        """Runs heard within about the last window (up to one window more before pruning)."""
        return len(self._heard)
