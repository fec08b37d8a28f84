"""A read's events as the flusher handles them: where each one sits, log_batch's entries, and
what is kept of one MLflow refused."""

from __future__ import annotations

from typing import NamedTuple

from bridge.convert import batch_to_proto
from bridge.events import DeleteTag, Event, EventBatch, Metric, MlflowCall, Param, Tag
from server.queue.sqlite import DeadLetter


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


def dead_letter(client_id: str, job: str, run_key: str, item: Item, reason: str) -> DeadLetter:
    """What is kept of an event MLflow refused for good: itself, for a replay, and why."""
    event = item.event
    assert isinstance(event, Metric | Param | Tag | DeleteTag | MlflowCall)
    if isinstance(event, MlflowCall):
        kind, key, value = "mlflow_call", event.method, ""
    elif isinstance(event, DeleteTag):
        kind, key, value = "delete_tag", event.key, ""
    else:
        kind, key, value = type(event).__name__.lower(), event.key, str(event.value)
    batch = EventBatch(client_id, job, run_key, item.seq, (event,))
    payload = batch_to_proto(batch).SerializeToString()
    return DeadLetter(kind, key, value, reason, item.seq, payload)
