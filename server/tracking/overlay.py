"""A caller's reads of its own run, answered without waiting for its newest points and params.

A read through the receiver sees the caller's writes (service.py waits until they are in
MLflow). A script that checks its logging reads its run right after each log call, and for the
two reads it makes, ``get_metric_history`` and ``get_run``, that wait was mostly one MLflow
write. That made the script slower than with MLflow itself (issue 23). When every event of the
run still on its way to MLflow is a plain metric point or param, the receiver asks MLflow at
once and adds those events to the answer the way MLflow's store will once it has them:

- a history gets the points MLflow does not hold yet (a point whose timestamp, step and value
  are there already is the same row in MLflow), in MLflow's order: timestamp, step, value;
- a run gets the params it does not hold yet (a key it holds keeps its value: MLflow refuses to
  change one) and, per key, the latest point by MLflow's rule: the first logged with the
  greatest (step, timestamp, value).

The events are read before MLflow is asked, so each one is in MLflow's answer, in the overlay,
or in both (added twice, it changes nothing). Anything else on its way (tags, which replace one
another; deletions; a run's end; journaled calls; points with a round, NaN or an infinity;
keys MLflow would refuse), a paged history, a run that is not in MLflow yet or is quarantined,
too many events: the read waits, as before. A run deleted in MLflow gets nothing added (MLflow
refuses writes to it; its events are held, and the run quarantined, at the flusher's next try).
The run's ``trackbridge.flushed`` tag (the receiver's own progress mark) shows the last write
MLflow has.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from mlflow.protos import service_pb2 as pb
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from bridge.pb.v1 import events_pb2
from server.flush.bulk.rows import plain_metric_key, stored_value
from server.queue.checksum import intact

MAX_EVENTS = 10_000
"""More events than this on their way: the read waits for them (decoding them would cost more)."""

GET_RUN = pb.GetRun.DESCRIPTOR.full_name
GET_METRIC_HISTORY = pb.GetMetricHistory.DESCRIPTOR.full_name

Point = tuple[str, float, int, int]
"""A metric point: key, value, timestamp (ms), step."""


@dataclass(slots=True)
class Pending:
    """The plain events of a run not in MLflow yet, in the order they were logged."""

    points: list[Point] = field(default_factory=list)
    params: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, method: str, request: Any, payload: bytes) -> bytes | None:
        """MLflow's answer ``payload`` to ``request`` with these events in it; None when they
        would not fit in its one page (the read then waits for MLflow to hold them)."""
        if method == GET_METRIC_HISTORY:
            return _history_with(payload, self.points, request)
        return _run_with(payload, self)


def target(method: str, payload: bytes) -> tuple[Any, str] | None:
    """The request and the run id of a read that can be answered with an overlay; None for
    any other call (including a paged history)."""
    try:
        if method == GET_RUN:
            run = pb.GetRun.FromString(payload)
            return run, run.run_id or run.run_uuid
        if method == GET_METRIC_HISTORY:
            history = pb.GetMetricHistory.FromString(payload)
            if history.page_token:  # a later page: MLflow's offsets do not know the events
                return None
            return history, history.run_id or history.run_uuid
    except DecodeError:
        return None
    return None


def pending_of(queue: sqlite3.Connection, run_key: str, flushed_seq: int) -> Pending | None:
    """The events of run ``run_key`` (an owned key) after ``flushed_seq`` that are still in
    ``queue``, when all of them are plain points and params; None otherwise."""
    pending = Pending()
    # The flusher's read (Queue.pending_after), without its setting damaged batches aside:
    # this connection only reads, and a damaged batch is the flusher's to report.
    rows = queue.execute(
        "SELECT first_seq, last_seq, done_seq, payload, crc FROM batches"
        " WHERE run_key = ? AND last_seq > ? ORDER BY id LIMIT ?",
        (run_key, flushed_seq, MAX_EVENTS + 1),
    ).fetchall()
    coming = sum(max(0, last - max(first - 1, done, flushed_seq)) for first, last, done, *_ in rows)
    if coming > MAX_EVENTS:
        return None
    for first, _last, done, payload, crc in rows:
        if not intact(payload, crc):
            return None
        try:
            events = events_pb2.EventBatch.FromString(payload).events
        except DecodeError:
            return None
        written = max(done, flushed_seq)  # events up to it are in MLflow already
        for seq, event in enumerate(events, start=first):
            if seq > written and not _add(pending, event):
                return None
    return pending


def _add(pending: Pending, event: events_pb2.Event) -> bool:
    """Adds a plain point or param; False for anything else."""
    kind = event.WhichOneof("kind")
    if kind == "metric":
        m = event.metric
        if m.round or m.timestamp_ms < 0 or not math.isfinite(m.value):
            return False
        if not plain_metric_key(m.key):
            return False
        pending.points.append((m.key, m.value, m.timestamp_ms, m.step))
        return True
    if kind == "param":
        if len(event.param.value) > MAX_PARAM_VAL_LENGTH:  # MLflow would cut it
            return False
        pending.params.append((event.param.key, event.param.value))
        return True
    return False


def _history_with(payload: bytes, points: list[Point], request: Any) -> bytes | None:
    reply = pb.GetMetricHistory.Response.FromString(payload)
    key = request.metric_key
    rows = [(m.key, m.value, m.timestamp, m.step) for m in reply.metrics]
    # MLflow's SQL store answers in this order; any other store's is kept as it answered.
    ordered = all(_order(a) <= _order(b) for a, b in itertools.pairwise(rows))
    held = {_row_key(row) for row in rows}
    added = False
    for point in points:
        if point[0] == key and _row_key(point) not in held:
            held.add(_row_key(point))
            rows.append(point)
            added = True
    if not added:
        return payload
    if reply.next_page_token or (
        request.HasField("max_results") and len(rows) > request.max_results
    ):
        return None
    if ordered:
        rows.sort(key=_order)
    del reply.metrics[:]
    for k, value, timestamp, step in rows:
        reply.metrics.add(key=k, value=value, timestamp=timestamp, step=step)
    return reply.SerializeToString()


def _order(point: Point) -> tuple[int, int, float]:
    """Where MLflow's SQL store puts a point in a history: timestamp, step, stored value."""
    return point[2], point[3], stored_value(point[1])


def _row_key(point: Point) -> tuple[int, int, float, bool]:
    """What makes a point one row of MLflow's ``metrics`` table (the run and key aside)."""
    return point[2], point[3], stored_value(point[1]), math.isnan(point[1])


def _run_with(payload: bytes, pending: Pending) -> bytes:
    reply = pb.GetRun.Response.FromString(payload)
    if reply.run.info.lifecycle_stage != "active":  # deleted: MLflow refuses its writes
        return payload
    data = reply.run.data
    keys = {p.key for p in data.params}
    for name, text in pending.params:
        if name not in keys:
            keys.add(name)
            data.params.add(key=name, value=text)
    latest = {m.key: m for m in data.metrics}
    for key, value, timestamp, step in pending.points:
        held = latest.get(key)
        if held is None:
            latest[key] = data.metrics.add(key=key, value=value, timestamp=timestamp, step=step)
        elif (step, timestamp, value) > (held.step, held.timestamp, stored_value(held.value)):
            held.value, held.timestamp, held.step = value, timestamp, step
    return reply.SerializeToString()
