"""A read's events as the flusher handles them: where each one sits, and log_batch's entries."""

from __future__ import annotations

from typing import NamedTuple

from bridge.events import Event, Metric, Param, Tag


class Item(NamedTuple):
    """One event of a read not written before (a tuple: one is made per metric point)."""

    event: Event
    batch: int
    """Which batch of the read it is in (its index)."""
    seq: int
    ordinal: int
    """Its place among the events of the read not written before."""


def entries_of(items: list[Item], round_as_step: bool = False) -> list[Metric | Param | Tag]:
    """The metrics, params and tags among ``items``; with ``round_as_step`` a metric's round is
    its step."""
    out: list[Metric | Param | Tag] = []
    for item in items:
        e = item.event
        if not isinstance(e, Metric | Param | Tag):
            continue
        if round_as_step and isinstance(e, Metric) and e.round:  # MLflow's step is the round
            e = Metric(e.key, e.value, e.round, e.timestamp_ms)
        out.append(e)
    return out
