"""A read's events cut into the slices the flusher writes (server/flush/writing.py).

A slice is the entries (metrics, params, tags) between two other events, ``Budget.cut`` of them
at most; each other event (a run start, a run end...) ends the slice before it and is written
alone, in its place.

Metric points, nearly all of the traffic, take a shorter way when the bulk writer writes them
(server/flush/bulk/): a slice of plain points is decoded from the stored payloads straight to
the ``metrics`` rows it writes (:class:`Rows`), without an event object per point. A slice that
meets anything else (a param, a tag, a point with a round to add, a key or time MLflow would
refuse) is decoded again the usual way from its first event (:meth:`Rows.items`), so what is
refused is found and dead-lettered as ever.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from bridge.convert import event_from_proto
from bridge.events import Dropped, Event, Metric, Param, Tag
from bridge.limits import ROUND_METRIC
from bridge.pb.v1 import events_pb2
from server.flush.bulk.rows import Row, metric_row, plain_metric_key
from server.flush.bulk.sink import BulkSink, log_together, transactions
from server.flush.entries import Item, entries_of
from server.flush.pool import CALL_ENTRIES, Budget
from server.flush.progress import Read
from server.flush.sink import MlflowSink


@dataclass(slots=True)
class Rows:
    """A slice of plain metric points as ``metrics`` rows of the run ``run_id``: every event of
    the read from ``first`` to ``last`` (``Item``'s batch, seq and ordinal), one row each."""

    run_id: str
    rows: list[Row]
    first: tuple[int, int, int]
    last: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.rows)

    def items(self, read: Read) -> list[Item]:
        """The slice's events decoded the usual way (to find what MLflow refuses)."""
        first_batch, first_seq, ordinal = self.first
        last_batch, last_seq, _ = self.last
        out: list[Item] = []
        for index in range(first_batch, last_batch + 1):
            stored = read.batches[index]
            msg = events_pb2.EventBatch.FromString(stored.payload)
            for seq, raw in enumerate(msg.events, start=stored.first_seq):
                if seq <= stored.done_seq or (index, seq) < (first_batch, first_seq):
                    continue
                if (index, seq) > (last_batch, last_seq):
                    break
                out.append(Item(event_from_proto(raw), index, seq, ordinal))
                ordinal += 1
        assert len(out) == len(self.rows), "a slice of rows holds every event in its range"
        return out


Slice = list[Item] | Rows


class Step(NamedTuple):
    """A slice to write, then (when it ended there) the event to write after it."""

    entries: Slice
    event: Item | None = None
    raw: events_pb2.Event | None = None


def slices(
    read: Read,
    budget: Budget,
    rows_of: Callable[[], str],
    dropped: Callable[[int, Dropped], Event] | None = None,
    round_as_step: bool = False,
) -> Iterator[Step]:
    """The read's slices in order, the last one perhaps empty; each ends at ``budget.cut``
    entries (asked as it begins, after the previous one was written and spent).

    ``rows_of`` says, as each slice begins, which run its plain points may go as rows for (""
    when not: the bulk writer is off, or the run is not open yet); ``dropped`` turns a gap
    event into what is written (server/queue/gaps.py)."""
    entries: list[Item] = []
    rows: list[Row] = []
    run_id = ""
    begins = True
    cut = 0
    first = last = (0, 0, 0)
    ordinal = 0
    for index, stored in enumerate(read.batches):
        msg = events_pb2.EventBatch.FromString(stored.payload)
        for seq, raw in enumerate(msg.events, start=stored.first_seq):
            if seq <= stored.done_seq:
                continue  # written before the last stop
            ordinal += 1
            if begins:
                begins, cut, run_id = False, budget.cut, rows_of()
                first = (index, seq, ordinal)
            if run_id and raw.WhichOneof("kind") == "metric":
                m = raw.metric
                turn = m.round  # with round_as_step, MLflow's step is the round
                if (not turn or round_as_step) and m.timestamp_ms >= 0 and plain_metric_key(m.key):
                    rows.append(metric_row(run_id, m.key, m.value, m.timestamp_ms, turn or m.step))
                    last = (index, seq, ordinal)
                    if len(rows) >= cut:
                        yield Step(Rows(run_id, rows, first, last))
                        rows, begins = [], True
                    continue
            event = event_from_proto(raw)
            if isinstance(event, Dropped) and dropped is not None:
                event = dropped(seq, event)  # the run's total, a tag
            item = Item(event, index, seq, ordinal)
            if isinstance(event, Metric | Param | Tag):
                if rows:  # the slice goes the usual way from its first event
                    entries = Rows(run_id, rows, first, last).items(read)
                    rows = []
                run_id = ""
                entries.append(item)
                if len(entries) >= cut:
                    yield Step(entries)
                    entries, begins = [], True
                continue
            yield Step(Rows(run_id, rows, first, last) if rows else entries, item, raw)
            entries, rows, begins = [], [], True
    yield Step(Rows(run_id, rows, first, last) if rows else entries)


class Transaction(NamedTuple):
    """One transaction of a slice's writes: ``call(progress)`` writes it, ``progress`` the mark
    of its last call."""

    call: Callable[[str], None]
    items: Callable[[], list[Item]]
    """Its entries decoded the usual way (to find what MLflow refuses)."""
    last: tuple[int, int, int]
    """Its last event's batch, seq and ordinal."""
    entries: int
    metrics: int
    calls: int
    """The ``log_batch`` calls it stands for."""


def transactions_of(
    sink: MlflowSink, run_id: str, read: Read, entries: Slice, round_as_step: bool
) -> Iterator[Transaction]:
    """How a slice is written: rows in one transaction, entries in ``log_batch`` calls (all in
    one transaction with the bulk writer, one each through MLflow's client)."""
    if isinstance(entries, Rows):
        assert isinstance(sink, BulkSink)
        rows = entries
        calls = -(-len(rows) // CALL_ENTRIES)
        write = functools.partial(sink.log_rows, run_id, rows.rows)
        yield Transaction(write, lambda: rows.items(read), rows.last, len(rows), len(rows), calls)
        return
    offset = 0
    points = entries_of(entries, round_as_step)
    for group in transactions(sink, points, "" if round_as_step else ROUND_METRIC):
        covered = sum(chunk.entries for chunk in group)
        part = entries[offset : offset + covered]
        offset += covered
        metrics = sum(len(chunk.metrics) for chunk in group)
        write = functools.partial(log_together, sink, run_id, group)
        last = part[-1]
        where = (last.batch, last.seq, last.ordinal)
        yield Transaction(write, functools.partial(list, part), where, covered, metrics, len(group))
