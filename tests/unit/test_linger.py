"""client_sdk/_linger.py: the sender's wait follows the receiver's answer time, within bounds."""

from __future__ import annotations

import pytest

from client_sdk._linger import RTT_FACTOR, WINDOW, AdaptiveLinger
from client_sdk.config import WriterConfig


def test_before_any_publish_the_wait_is_the_shortest() -> None:
    assert AdaptiveLinger(0.02, 0.2).seconds == 0.02


def test_a_receiver_answering_at_once_gets_the_shortest_wait() -> None:
    linger = AdaptiveLinger(0.02, 0.2)
    for _ in range(20):
        linger.sent(0.0002)
    assert linger.seconds == 0.02


def test_a_busy_receiver_gets_the_longest_wait_and_never_more() -> None:
    linger = AdaptiveLinger(0.02, 0.2)
    for _ in range(50):
        linger.sent(2.0)
    assert linger.seconds == 0.2


def test_in_between_the_wait_is_a_multiple_of_the_round_trip() -> None:
    linger = AdaptiveLinger(0.001, 10.0)
    for _ in range(100):
        linger.sent(0.004)
    assert linger.seconds == pytest.approx(RTT_FACTOR * 0.004)


def test_one_stalled_call_does_not_lengthen_the_wait() -> None:
    linger = AdaptiveLinger(0.02, 0.2)
    for _ in range(WINDOW):
        linger.sent(0.001)
    quiet = linger.seconds
    linger.sent(5.0)
    assert linger.seconds == quiet


def test_the_wait_follows_a_slowing_receiver_and_comes_back() -> None:
    linger = AdaptiveLinger(0.02, 0.2)
    for _ in range(WINDOW):
        linger.sent(0.001)
    quiet = linger.seconds
    for _ in range(WINDOW // 2 + 1):  # most recent calls slow: the receiver is busy
        linger.sent(0.5)
    busy = linger.seconds
    for _ in range(WINDOW):
        linger.sent(0.001)
    assert quiet == pytest.approx(RTT_FACTOR * 0.001)
    assert busy == 0.2
    assert linger.seconds == quiet


def test_a_shortest_wait_above_the_longest_makes_a_fixed_wait() -> None:
    linger = AdaptiveLinger(0.5, 0.1)
    assert linger.seconds == 0.1
    linger.sent(0.0)
    assert linger.seconds == 0.1


def test_negative_round_trips_count_as_zero() -> None:
    linger = AdaptiveLinger(0.02, 0.2)
    linger.sent(-5.0)
    assert linger.seconds == 0.02


def test_min_linger_is_checked_like_the_other_durations() -> None:
    with pytest.raises(ValueError, match="min_linger_s must be positive"):
        WriterConfig(receiver="127.0.0.1:1", client_id="c", min_linger_s=0.0)
