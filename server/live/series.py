"""One metric of one client in bounded memory: an evenly thinned sample of the whole run.

A series keeps every point until it holds ``capacity`` of them. Then it drops every other point
and from there on keeps every 2nd point offered; when full again, every 4th, and so on. Memory
stays at ``capacity`` points whatever the run's length, the chart still spans the whole run, and
the latest point is always known exactly. Points offered since the last :meth:`take_fresh`
are kept apart (thinned the same way past ``fresh_capacity``) so that viewers get only what
is new.
"""

from __future__ import annotations

from array import array

Point = tuple[int, float, int]
"""``(step, value, timestamp_ms)``."""


class Series:
    """Recent points of one metric of one client.

    Args:
        capacity: Most points kept (at least 2).
        fresh_capacity: Most points kept between two :meth:`take_fresh` calls.
    """

    __slots__ = (
        "_fresh",
        "_fresh_cap",
        "_fresh_offered",
        "_fresh_stride",
        "_latest_kept",
        "_offered",
        "_stride",
        "capacity",
        "latest",
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
        self.latest: Point | None = None
        self._latest_kept = False
        self._stride = 1
        self._offered = 0
        self._fresh: list[Point] = []
        self._fresh_cap = max(2, fresh_capacity)
        self._fresh_stride = 1
        self._fresh_offered = 0

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def stride(self) -> int:
        """Every how many offered points one is kept (1 until the first thinning)."""
        return self._stride

    def add(self, step: int, value: float, timestamp_ms: int) -> None:
        """Offers one point, in the order the client logged it."""
        point = (step, value, timestamp_ms)
        self.latest = point
        index = self._offered
        self._offered += 1
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
        self._latest_kept = index % self._stride == 0
        if not self._latest_kept:
            return
        self.steps.append(step)
        self.values.append(value)
        self.times.append(timestamp_ms)
        if len(self.steps) > self.capacity:
            self._latest_kept = (len(self.steps) - 1) % 2 == 0
            self.steps = self.steps[::2]
            self.values = self.values[::2]
            self.times = self.times[::2]
            self._stride *= 2

    def points(self) -> list[Point]:
        """The kept points, oldest first, ending with the latest point."""
        out = list(zip(self.steps, self.values, self.times, strict=True))
        if self.latest is not None and not self._latest_kept:
            out.append(self.latest)  # compared by bookkeeping: NaN != NaN
        return out

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
        self.latest = None
        self._latest_kept = False
        self._stride = 1
        self._offered = 0
        self._fresh = []
        self._fresh_stride = 1
        self._fresh_offered = 0
