"""How long the sender waits for a batch to fill: what the receiver advises for the size of its
fleet, shorter while the receiver answers at once, never longer than ``linger_s``.

A fixed linger is a compromise between two fleets. With a few clients a 200 ms wait only
delays the live view; with a thousand clients that same wait is what keeps the receiver from
drowning in calls. A client cannot tell which fleet it is in; the receiver can. It counts the
runs that published recently and advises, in every publish ack, the wait that keeps all their
calls within its budget (``advised_linger_s``: runs / ``--publish-budget``, 5,000 calls/s by
default: a thousand runs wait 0.2 s, a hundred 20 ms; server/ingest/pacing.py). The client's
own rule is a floor under that advice: ``RTT_FACTOR`` times the median round trip of its last
``WINDOW`` publishes (a client spends at most about 1/``RTT_FACTOR`` of its sending time
waiting on calls; the median, so that one stalled call does not slow it down), which
lengthens the wait when a receiver slows down before its count says so. So the linger is
``max(advised, RTT_FACTOR x median round trip)`` between ``min_linger_s`` and ``linger_s``: the
receiver's total call rate stays within its budget whatever the fleet size, and never exceeds
what a fixed ``linger_s`` allows. Before the first ack the wait is ``linger_s``, so that a
thousand clients starting together do not burst; a receiver that advises nothing (0: one that
predates the advice) leaves the round-trip rule alone.
"""

from __future__ import annotations

import statistics
from collections import deque

RTT_FACTOR = 25.0
"""The linger is at least this many times the recent publish round trip (8 ms makes 200 ms)."""

WINDOW = 15
"""Publishes whose round trips count."""


class AdaptiveLinger:
    """The sender's linger, from the receiver's advice and its publishes' round trips (pure
    logic)."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self._min_s = min(min_s, max_s)
        self._max_s = max_s
        self._rtts: deque[float] = deque(maxlen=WINDOW)
        self._seconds = self._max_s

    def sent(self, round_trip_s: float, advised_s: float = 0.0) -> None:
        """Notes how long a publish took, from the call to the receiver's ack (retries too:
        a receiver that throttles is a busy one), and the linger its ack advised (0: none)."""
        self._rtts.append(max(0.0, round_trip_s))
        wanted = max(advised_s, RTT_FACTOR * statistics.median(self._rtts))
        self._seconds = min(self._max_s, max(self._min_s, wanted))

    @property
    def seconds(self) -> float:
        """How long to wait for a batch to fill now; before any publish, the longest."""
        return self._seconds
