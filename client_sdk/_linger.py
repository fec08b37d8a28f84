"""How long the sender waits for a batch to fill: short while the receiver answers at once,
longer as its answers slow down.

A fixed linger is a compromise between two fleets. With a few clients the receiver answers a
publish in a millisecond or two and a 200 ms wait only delays the live view; with a thousand
clients that same wait is what keeps the receiver from drowning in calls. The receiver's own
answer time says which fleet a client is in: every client sees it slow down together as the
receiver fills up. So the linger follows it, ``RTT_FACTOR`` times the median round trip of the
last ``WINDOW`` publishes (a client spends at most about 1/``RTT_FACTOR`` of its sending time
waiting on calls; the median, so that one stalled call does not slow the client down),
between ``min_linger_s`` and ``linger_s``. As more clients shorten their waits the round trip
grows and lengthens them again: the fleet settles where the receiver keeps up, and never sends
more often than a ``linger_s`` wait allows once the receiver is busy.
"""

from __future__ import annotations

import statistics
from collections import deque

RTT_FACTOR = 25.0
"""The linger is this many times the recent publish round trip (8 ms makes 200 ms)."""

WINDOW = 15
"""Publishes whose round trips count."""


class AdaptiveLinger:
    """The sender's linger, from the round trips of its publishes (pure logic)."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self._min_s = min(min_s, max_s)
        self._max_s = max_s
        self._rtts: deque[float] = deque(maxlen=WINDOW)
        self._seconds = self._min_s

    def sent(self, round_trip_s: float) -> None:
        """Notes how long a publish took, from the call to the receiver's ack (retries too:
        a receiver that throttles is a busy one)."""
        self._rtts.append(max(0.0, round_trip_s))
        wanted = RTT_FACTOR * statistics.median(self._rtts)
        self._seconds = min(self._max_s, max(self._min_s, wanted))

    @property
    def seconds(self) -> float:
        """How long to wait for a batch to fill now; before any publish, the shortest."""
        return self._seconds
