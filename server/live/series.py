"""One metric of one client in bounded memory: the whole run in at most ``capacity`` buckets,
each with the min/max envelope of the points it stands for.

A series keeps every point (a bucket of one) until it holds ``capacity`` buckets. Then
neighbouring buckets merge pairwise, and from there on each bucket takes 2 offered points;
when full again, 4, and so on. A bucket is drawn at its last point (step, value, time) and
keeps the lowest and highest value of all of its points, so a spike that thinning would drop
stays visible as the envelope. Memory stays at ``capacity`` buckets (5 numbers each, 40 bytes)
whatever the run's length, the chart spans the whole run, and the latest point is always
known exactly. Points offered since the last :meth:`take_fresh` are kept apart (thinned the
same way past ``fresh_capacity``) so that viewers get only what is new.
"""

from __future__ import annotations

from array import array
from math import isnan

Point = tuple[int, float, int]
"""``(step, value, timestamp_ms)``."""


class Series:
    """The points of one metric of one client, thinned into an envelope.

    Args:
        capacity: Most buckets kept (at least 2).
        fresh_capacity: Most points kept between two :meth:`take_fresh` calls.
    """

    __slots__ = (
        "_fill",
        "_fresh",
        "_fresh_cap",
        "_fresh_offered",
        "_fresh_stride",
        "_stride",
        "capacity",
        "highs",
        "latest",
        "lows",
        "steps",
        "times",
        "values",
    )

    def __init__(self, capacity: int, fresh_capacity: int = 32) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity!r}")
        self.capacity = capacity
        self.steps = array("q")
        self.values = array("d")
        self.times = array("q")
        self.lows = array("d")
        self.highs = array("d")
        self.latest: Point | None = None
        self._stride = 1
        self._fill = 0  # points in the last bucket
        self._fresh: list[Point] = []
        self._fresh_cap = max(2, fresh_capacity)
        self._fresh_stride = 1
        self._fresh_offered = 0

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def stride(self) -> int:
        """How many offered points a full bucket stands for (1 until the first merge)."""
        return self._stride

    def add(self, step: int, value: float, timestamp_ms: int) -> None:
        """Offers one point, in the order the client logged it."""
        point = (step, value, timestamp_ms)
        self.latest = point
        fresh = self._fresh
        nth = self._fresh_offered
        self._fresh_offered += 1
        if nth % self._fresh_stride == 0:
            fresh.append(point)
            if len(fresh) > self._fresh_cap:
                del fresh[1::2]
                self._fresh_stride *= 2
                fresh[-1] = point
        else:
            fresh[-1] = point  # thinned: the newest point stands for the ones it replaced
        if 0 < self._fill < self._stride:
            self._fill += 1
            self.steps[-1] = step
            self.values[-1] = value
            self.times[-1] = timestamp_ms
            # NaN never wins a comparison: it stays out of an envelope that has a number.
            low, high = self.lows[-1], self.highs[-1]
            if value < low or isnan(low):
                self.lows[-1] = value
            if value > high or isnan(high):
                self.highs[-1] = value
            return
        self._fill = 1
        self.steps.append(step)
        self.values.append(value)
        self.times.append(timestamp_ms)
        self.lows.append(value)
        self.highs.append(value)
        if len(self.steps) > self.capacity:
            self._merge()

    def _merge(self) -> None:
        # Every bucket but the new last one (one point) is full: neighbours merge in pairs; with
        # an odd count the new one stays on its own.
        lows, highs = self.lows, self.highs
        count = len(lows)
        merged_lows = array("d")
        merged_highs = array("d")
        for i in range(0, count - 1, 2):
            a, b = lows[i], lows[i + 1]
            merged_lows.append(a if a < b or isnan(b) else b)
            a, b = highs[i], highs[i + 1]
            merged_highs.append(a if a > b or isnan(b) else b)
        if count % 2:
            merged_lows.append(lows[-1])
            merged_highs.append(highs[-1])
            self.steps = self.steps[1::2] + self.steps[-1:]
            self.values = self.values[1::2] + self.values[-1:]
            self.times = self.times[1::2] + self.times[-1:]
        else:
            self._fill = self._stride + 1
            self.steps = self.steps[1::2]
            self.values = self.values[1::2]
            self.times = self.times[1::2]
        self.lows = merged_lows
        self.highs = merged_highs
        self._stride *= 2

    def points(self) -> list[Point]:
        """Each bucket's last point, oldest first, ending with the latest point."""
        return list(zip(self.steps, self.values, self.times, strict=True))

    def envelope(self) -> tuple[list[float], list[float]]:
        """Each bucket's lowest and highest value, in the order of :meth:`points`."""
        return list(self.lows), list(self.highs)

    def take_fresh(self) -> list[Point]:
        """The points offered since the previous call (thinned), and forgets them."""
        fresh = self._fresh
        self._fresh = []
        self._fresh_stride = 1
        self._fresh_offered = 0
        return fresh

    def clear(self) -> None:
        """Forgets every point (a client started a new run)."""
        self.steps = array("q")
        self.values = array("d")
        self.times = array("q")
        self.lows = array("d")
        self.highs = array("d")
        self.latest = None
        self._stride = 1
        self._fill = 0
        self._fresh = []
        self._fresh_stride = 1
        self._fresh_offered = 0
