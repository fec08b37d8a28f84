"""Per-client limits: a token-bucket rate limiter and a count of calls in flight.

Both are keyed by client and bounded in memory; one client over its limit never holds back
another. They run on the event loop's thread only, so they need no locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_TRACKED_CLIENTS = 100_000
"""Buckets kept; past it the least recently used one is forgotten (it starts full again)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per client: ``rate_per_s`` sustained, ``burst`` at once.

    A request costs its number of events (at least 1). A request larger than the burst is let
    through when the bucket is full and leaves it in debt, so that it is never refused for
    good but still pays for its size.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_TRACKED_CLIENTS,
    ) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self._rate > 0

    def take(self, client: str, cost: float) -> float:
        """Charges ``cost`` to ``client``: 0.0 when admitted, else the seconds to wait."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = _Bucket(self._burst, now)
            if len(self._buckets) > self._max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        cost = max(1.0, cost)
        needed = min(cost, self._burst)
        if bucket.tokens < needed:
            return (needed - bucket.tokens) / self._rate
        bucket.tokens -= cost
        return 0.0


class InFlight:
    """Counts each client's calls in progress against a limit (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: dict[str, int] = {}

    @property
    def limit(self) -> int:
        """Most calls one client may have in flight."""
        return self._limit

    def acquire(self, client: str) -> bool:
        """Takes a slot for ``client``; False when it already has ``limit`` calls in flight."""
        count = self._counts.get(client, 0)
        if self._limit and count >= self._limit:
            return False
        self._counts[client] = count + 1
        return True

    def release(self, client: str) -> None:
        """Gives back a slot taken by ``acquire``."""
        count = self._counts.get(client, 0) - 1
        if count > 0:
            self._counts[client] = count
        else:
            self._counts.pop(client, None)


class LogThrottle:
    """Lets each kind of log line through at most ``per_window`` times per window, so that a
    flood of bad calls cannot flood the log (or fill the disk)."""

    def __init__(
        self,
        per_window: int = 10,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_window = per_window
        self._window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self._counts: dict[str, int] = {}

    def allow(self, kind: str) -> bool:
        """Whether a line of this kind may be logged now."""
        now = self._clock()
        if now - self._window_start >= self._window_s:
            self._window_start = now
            self._counts.clear()
        count = self._counts.get(kind, 0)
        if count >= self._per_window or len(self._counts) >= MAX_TRACKED_CLIENTS:
            return False
        self._counts[kind] = count + 1
        return True
