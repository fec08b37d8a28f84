"""A read cut into slices (server/flush/slices.py): the slices of plain points decoded straight to
``metrics`` rows hold exactly the events, positions and rows that the usual decoding gives, cut
at the same places; anything else in a slice sends it the usual way from its first event."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.convert import batch_to_proto
from bridge.events import Event, EventBatch, Metric, Param, RunEnd, RunStart, RunStatus, Tag
from server.flush.bulk.rows import Columns, Row
from server.flush.entries import entries_of
from server.flush.pool import SLICE_ENTRIES, Budget
from server.flush.progress import Read
from server.flush.slices import ROWS_PER_SLICE, Rows, plain_columns, slices
from server.queue.sqlite import PendingBatch
from tests.support.bulk import metric_row

pytestmark = pytest.mark.timeout(120)

RUN = "0123456789abcdef0123456789abcdef"


def _read(events: list[Event], sizes: list[int], done: int) -> Read:
    """The events stored in batches of ``sizes`` (the rest in one), the first ``done`` of them
    written before the last stop."""
    batches: list[PendingBatch] = []
    seq = 1
    while seq <= len(events):
        size = sizes[len(batches)] if len(batches) < len(sizes) else len(events)
        part = tuple(events[seq - 1 : seq - 1 + size])
        payload = batch_to_proto(EventBatch("c", "j", "r", seq, part)).SerializeToString()
        last = seq + len(part) - 1
        batches.append(PendingBatch(len(batches), "r", seq, last, payload, done if seq == 1 else 0))
        seq = last + 1
    return Read(batches)


def _cut(read: Read, rows_for: str, *, round_as_step: bool = False) -> list[Any]:
    """Each slice as (its kind, the positions of its events, its rows, the event after it),
    spent as the run writer spends them (others always waiting)."""
    budget = Budget(math.inf, lambda: True, lambda: 0.0)
    out: list[Any] = []
    for entries, item, _raw in slices(read, budget, lambda: rows_for, None, round_as_step):
        if isinstance(entries, Rows):
            kind, rows = "rows", entries.columns.rows(RUN)
            items = entries.items(read)
            assert entries.first == items[0][1:] and entries.last == items[-1][1:]
        else:
            kind, items = "items", entries
            points = [e for e in entries_of(items, round_as_step) if isinstance(e, Metric)]
            rows = [metric_row(RUN, m.key, m.value, m.timestamp_ms, m.step) for m in points]
        where = [(i.batch, i.seq, i.ordinal) for i in items]
        out.append((kind, where, rows, item and (item.batch, item.seq, item.ordinal)))
        budget.spend(len(entries) + (item is not None))
    return out


def _stream(cut: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """The slices' events and rows, each in one list, and each event written after a slice
    with the number of events before it: what was written in which order, wherever the slices
    end."""
    where: list[Any] = []
    rows: list[Any] = []
    after: list[Any] = []
    for _kind, ws, rs, item in cut:
        where += ws
        rows += rs
        if item is not None:
            after.append((len(where), item))
    return where, rows, after


VALUES = st.sampled_from([0.0, -0.0, 1.5, math.nan, math.inf, -math.inf, 1e308])
point = st.builds(
    Metric, key=st.sampled_from(["loss", "acc/top1"]), value=VALUES,
    step=st.integers(-2, 5), timestamp_ms=st.integers(0, 3),
)  # fmt: skip
block = st.one_of(
    st.integers(1, 2 * SLICE_ENTRIES).map(
        lambda n: [Metric("loss", float(i), i, 1000 + i) for i in range(n)]
    ),
    st.lists(point, min_size=1, max_size=5),
    st.just([Param("lr", "0.1")]),
    st.just([Tag("note", "a")]),
    st.just([Metric("loss", 1.0, 3, 5, round=2)]),
    st.just([Metric("bad..key/", 1.0, 3, 5)]),
    st.just([RunEnd(RunStatus.FINISHED, 5)]),
)
reads = st.tuples(
    st.lists(block, min_size=1, max_size=6).map(lambda bs: [RunStart(), *itertools.chain(*bs)]),
    st.lists(st.integers(1, 1500), max_size=6),
    st.integers(0, 3),
).map(lambda t: _read(*t))


@settings(max_examples=60, deadline=None)
@given(read=reads, round_as_step=st.booleans())
def test_rows_hold_what_the_usual_decoding_gives(read: Read, round_as_step: bool) -> None:
    usual = _cut(read, "", round_as_step=round_as_step)
    assert all(kind == "items" for kind, *_ in usual)
    fast = _cut(read, RUN, round_as_step=round_as_step)
    assert _stream(fast) == _stream(usual)  # the same events, rows and events after them
    assert all(len(ws) <= SLICE_ENTRIES for _kind, ws, *_ in usual)
    for kind, ws, *_ in fast:  # a slice of rows, or one that went the usual way from there
        assert len(ws) <= ROWS_PER_SLICE + (kind == "items"), (kind, len(ws))


def test_plain_points_go_as_rows_in_slices_of_rows_per_slice() -> None:
    points = [Metric("loss", float(i), i, 1000 + i) for i in range(ROWS_PER_SLICE + 5)]
    read = _read([*points, RunEnd(RunStatus.FINISHED, 5)], [700, 700], done=3)
    cut = _cut(read, RUN)
    assert [(kind, len(where)) for kind, where, *_ in cut] == [
        ("rows", ROWS_PER_SLICE), ("rows", 2), ("items", 0),
    ]  # fmt: skip
    assert cut[0][1][0] == (0, 4, 1)  # after the events written before the last stop
    assert cut[1][3] == (2, len(points) + 1, len(points) + 1 - 3)  # the run's end after it
    assert cut[0][2][:2] == [metric_row(RUN, "loss", float(i), 1000 + i, i) for i in (3, 4)]


def _rows(columns: Columns | None) -> list[Row]:
    assert columns is not None
    return columns.rows(RUN)


def test_plain_columns_decode_points_as_one_by_one() -> None:
    """The all-at-once decoding of a run of points gives the rows the one-by-one one gives,
    and None for anything that is not a plain point."""
    values = [0.0, -0.0, 1.5, math.nan, math.inf, -math.inf]
    points = [Metric("a/b", v, i, 7 + i) for i, v in enumerate(values)]
    raw = batch_to_proto(EventBatch("c", "j", "r", 1, tuple(points))).events
    assert _rows(plain_columns(list(raw))) == [
        metric_row(RUN, "a/b", v, 7 + i, i) for i, v in enumerate(values)
    ]
    rounds = batch_to_proto(EventBatch("c", "j", "r", 1, (Metric("a", 1.0, 2, 3, round=4),)))
    assert plain_columns(list(rounds.events)) is None
    assert _rows(plain_columns(list(rounds.events), round_as_step=True)) == [
        metric_row(RUN, "a", 1.0, 3, 4)
    ]
    for other in (Metric("bad..key/", 1.0, 0, 1), Metric("a", 1.0, 0, -1), Param("p", "v")):
        batch = batch_to_proto(EventBatch("c", "j", "r", 1, (points[0], other)))
        assert plain_columns(list(batch.events)) is None, other


def test_a_param_sends_its_slice_the_usual_way_from_its_first_event() -> None:
    events: list[Event] = [Metric("loss", 1.0, 0, 7), Metric("loss", math.nan, 1, 7)]
    read = _read([RunStart(), *events, Param("lr", "0.1"), Metric("loss", 2.0, 2, 7)], [], 0)
    (start, mixed) = _cut(read, RUN)
    assert start[0] == "items" and start[3] == (0, 1, 1)
    assert mixed[0] == "items" and [w[1] for w in mixed[1]] == [2, 3, 4, 5]
