"""client_sdk/_linger.py and server/ingest/pacing.py: the sender's wait is what the receiver
advises for its fleet's size, or longer when its answers slow down, within bounds."""

from __future__ import annotations

import pytest

from client_sdk._linger import RTT_FACTOR, WINDOW, AdaptiveLinger
from client_sdk.config import WriterConfig
from server.config import ReceiverConfig
from server.ingest.pacing import DEFAULT_BUDGET_PER_S, WINDOW_S, PublishPacer


def test_before_any_publish_the_wait_is_the_longest() -> None:
    # A thousand clients starting together must not burst before the receiver has advised.
    assert AdaptiveLinger(0.02, 0.2).seconds == 0.2


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


def test_a_receivers_advice_longer_than_the_round_trip_rule_is_followed() -> None:
    linger = AdaptiveLinger(0.02, 0.2)
    linger.sent(0.0002, advised_s=0.08)  # fast answers, but a big fleet
    assert linger.seconds == 0.08


def test_the_round_trip_rule_lengthens_a_short_advice() -> None:
    linger = AdaptiveLinger(0.001, 10.0)
    for _ in range(WINDOW):
        linger.sent(0.004, advised_s=0.01)
    assert linger.seconds == pytest.approx(RTT_FACTOR * 0.004)


def test_advice_is_bounded_by_the_writers_own_wait() -> None:
    linger = AdaptiveLinger(0.02, 0.2)
    linger.sent(0.0002, advised_s=5.0)
    assert linger.seconds == 0.2
    linger.sent(0.0002, advised_s=0.0001)
    assert linger.seconds == 0.02


def test_no_advice_leaves_the_round_trip_rule_alone() -> None:
    advised, plain = AdaptiveLinger(0.001, 10.0), AdaptiveLinger(0.001, 10.0)
    for rtt in (0.001, 0.003, 0.002, 0.01):
        advised.sent(rtt, advised_s=0.0)  # an older receiver's ack: the field is absent
        plain.sent(rtt)
        assert advised.seconds == plain.seconds


def test_the_latest_advice_counts_as_the_fleet_shrinks() -> None:
    linger = AdaptiveLinger(0.02, 0.2)
    linger.sent(0.0002, advised_s=0.2)
    linger.sent(0.0002, advised_s=0.03)
    assert linger.seconds == 0.03


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_advice_spreads_the_budget_over_the_runs_publishing() -> None:
    pacer = PublishPacer(1000.0, clock=_Clock())
    advice = [pacer.heard(f"client-{i}/run") for i in range(50)]
    assert advice[0] == pytest.approx(1 / 1000)
    assert advice[-1] == pytest.approx(50 / 1000)
    assert pacer.heard("client-7/run") == pytest.approx(50 / 1000)  # heard again: one run


def test_the_default_budget_gives_a_thousand_clients_the_old_fixed_wait() -> None:
    pacer = PublishPacer(DEFAULT_BUDGET_PER_S, clock=_Clock())
    for i in range(999):
        pacer.heard(f"c{i}/r")
    assert pacer.heard("c999/r") == pytest.approx(0.2)
    small = PublishPacer(DEFAULT_BUDGET_PER_S, clock=_Clock())
    for i in range(99):
        small.heard(f"c{i}/r")
    assert small.heard("c99/r") == pytest.approx(0.02)


def test_runs_that_stopped_publishing_stop_counting() -> None:
    clock = _Clock()
    pacer = PublishPacer(100.0, clock=clock)
    for i in range(10):
        pacer.heard(f"gone-{i}/r")
    clock.now += WINDOW_S + 0.1
    assert pacer.heard("still/r") == pytest.approx(1 / 100)
    assert pacer.active_runs == 1


def test_runs_heard_within_the_window_keep_counting() -> None:
    clock = _Clock()
    pacer = PublishPacer(100.0, clock=clock)
    for step in range(20):  # every run heard each half window, for ten windows
        clock.now += WINDOW_S / 2
        for i in range(4):
            advice = pacer.heard(f"c{i}/r")
        assert advice == pytest.approx(4 / 100), step


def test_a_budget_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="budget_per_s must be positive"):
        PublishPacer(0.0)


@pytest.mark.parametrize("budget", [0.0, -3.0, 1e8, float("inf"), float("nan")])
def test_the_receivers_publish_budget_is_bounded(budget: float) -> None:
    with pytest.raises(ValueError, match=r"publish_budget_per_s \(--publish-budget\)"):
        ReceiverConfig(publish_budget_per_s=budget)


def test_the_receivers_publish_budget_defaults_to_five_thousand_calls() -> None:
    assert ReceiverConfig().publish_budget_per_s == 5000.0
    assert ReceiverConfig.resolve(publish_budget_per_s=50.0, env={}).publish_budget_per_s == 50.0


def test_min_linger_is_checked_like_the_other_durations() -> None:
    with pytest.raises(ValueError, match="min_linger_s must be positive"):
        WriterConfig(receiver="127.0.0.1:1", client_id="c", min_linger_s=0.0)
