"""A read's events cut into the slices the flusher writes (server/flush/writing.py).

A slice is the entries (metrics, params, tags) between two other events, ``Budget.cut`` of them
at most; each other event (a run start, a run end...) ends the slice before it and is written
alone, in its place.

Metric points, nearly all of the traffic, take a shorter way when the bulk writer writes them
(server/flush/bulk/): a slice of plain points is decoded from the stored payloads straight to
the ``metrics`` rows it writes (:class:`Rows`), without an event object per point. A slice that
meets anything else (a param, a tag, a point with a round to add, a key or time MLflow would
refuse) is decoded again the usual way from its first event (:meth:`Rows.items`), so what is
refused is found and dead-lettered as ever. A slice of rows is one transaction, and holds up to
``ROWS_PER_SLICE`` points rather than ``Budget.cut``: what a transaction costs is its commit.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from bridge.convert import event_from_proto
from bridge.events import Dropped, Event, Metric, Param, Tag
from bridge.limits import ROUND_METRIC
from bridge.pb.v1 import events_pb2
from server.flush.bulk.rows import Columns, plain_metric_key, stored_values
from server.flush.bulk.sink import BulkSink, log_together, transactions
from server.flush.entries import Item, entries_of
from server.flush.pool import CALL_ENTRIES, Budget
from server.flush.progress import Read
from server.flush.sink import MlflowSink

ROWS_PER_SLICE = 16 * CALL_ENTRIES
"""Plain points a slice of rows holds at most (when the budget's cut is smaller): a commit into
MLflow's SQLite file costs 3-10 ms whatever it holds, and inserting 16,000 rows about 60 ms, so
a turn that gives way after one slice still holds the others back well under a flush interval."""


@dataclass(slots=True)
class Rows:
    """A slice of plain metric points as ``metrics`` rows of the run ``run_id`` (in columns):
    every event of the read from ``first`` to ``last`` (``Item``'s batch, seq and ordinal), one
    row each."""

    run_id: str
    columns: Columns
    first: tuple[int, int, int]
    last: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.columns)

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
        assert len(out) == len(self.columns), "a slice of rows holds every event in its range"
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
    entries (asked as it begins, after the previous one was written and spent), a slice of
    rows at ``ROWS_PER_SLICE`` when that is more.

    ``rows_of`` says, as each slice begins, which run its plain points may go as rows for (""
    when not: the bulk writer is off, or the run is not open yet); ``dropped`` turns a gap
    event into what is written (server/queue/gaps.py)."""
    entries: list[Item] = []
    rows = Columns()
    run_id = ""
    begins = True
    cut = rows_cut = 0
    first = last = (0, 0, 0)
    ordinal = 0
    for index, stored in enumerate(read.batches):
        events = events_pb2.EventBatch.FromString(stored.payload).events
        pos = max(0, stored.done_seq + 1 - stored.first_seq)  # after those written before
        one_by_one = pos  # up to here, points are looked at one by one (they met another event)
        while pos < len(events):
            seq = stored.first_seq + pos
            if begins:
                begins, cut, run_id = False, budget.cut, rows_of()
                rows_cut = max(cut, ROWS_PER_SLICE)
                first = (index, seq, ordinal + 1)
            if run_id:  # the plain points from here, as many as the slice takes at once
                take = 1 if pos < one_by_one else min(len(events) - pos, rows_cut - len(rows))
                got = plain_columns(events[pos : pos + take], round_as_step)
                if got is None and take > 1:
                    one_by_one = pos + take
                    continue
                if got is not None:
                    rows.extend(got)
                    pos, ordinal = pos + take, ordinal + take
                    last = (index, seq + take - 1, ordinal)
                    if len(rows) >= rows_cut:
                        yield Step(Rows(run_id, rows, first, last))
                        rows, begins = Columns(), True
                    continue
            raw = events[pos]
            pos, ordinal = pos + 1, ordinal + 1
            event = event_from_proto(raw)
            if isinstance(event, Dropped) and dropped is not None:
                event = dropped(seq, event)  # the run's total, a tag
            item = Item(event, index, seq, ordinal)
            if isinstance(event, Metric | Param | Tag):
                if rows:  # the slice goes the usual way from its first event
                    entries = Rows(run_id, rows, first, last).items(read)
                    rows = Columns()
                run_id = ""
                entries.append(item)
                if len(entries) >= cut:
                    yield Step(entries)
                    entries, begins = [], True
                continue
            yield Step(Rows(run_id, rows, first, last) if rows else entries, item, raw)
            entries, rows, begins = [], Columns(), True
    yield Step(Rows(run_id, rows, first, last) if rows else entries)


_KIND = operator.methodcaller("WhichOneof", "kind")
_METRIC = operator.attrgetter("metric")
_KEY = operator.attrgetter("key")
_VALUE = operator.attrgetter("value")
_TIMESTAMP = operator.attrgetter("timestamp_ms")
_STEP = operator.attrgetter("step")
_ROUND = operator.attrgetter("round")


def plain_columns(
    events: Sequence[events_pb2.Event], round_as_step: bool = False
) -> Columns | None:
    """The ``metrics`` columns of ``events`` when every one is a plain metric point, else None.

    Plain: a timestamp not negative, a key MLflow takes, no round to add to the call (with
    ``round_as_step`` the round is the step). One pass per field, in C (``operator``'s getters),
    rather than Python code per point: points are nearly all the traffic."""
    kinds = list(map(_KIND, events))
    if not kinds or kinds.count("metric") != len(kinds):
        return None
    metrics = list(map(_METRIC, events))
    rounds = list(map(_ROUND, metrics))
    has_rounds = any(rounds)
    timestamps = list(map(_TIMESTAMP, metrics))
    keys = list(map(_KEY, metrics))
    if (
        (has_rounds and not round_as_step)
        or min(timestamps) < 0
        or not all(map(plain_metric_key, set(keys)))
    ):
        return None
    values = list(map(_VALUE, metrics))
    steps = list(map(_STEP, metrics))
    if has_rounds:
        steps = [r or s for r, s in zip(rounds, steps, strict=True)]
    values, nans = stored_values(values)
    return Columns(keys, values, timestamps, steps, nans)


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
        write = functools.partial(sink.log_rows, run_id, rows.columns)
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
