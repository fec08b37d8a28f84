"""Sinks beside MLflow: what the flusher calls to hand every stored event to them, once.

An :class:`EventSink` (the JSON-lines files of server/flush/jsonl.py) gets every event a run's
client sent, in the client's order, and is idempotent by sequence number: the flusher hands it
a batch again after a restart and it skips what it holds. MLflow stays behind
:class:`~server.flush.sink.MlflowSink`, which the run writer drives call by call (runs,
refusals, dead letters); the two meet here:

- a batch leaves the queue only when every sink has it: the run writer covers each read with
  :meth:`Mirror.cover` before it writes that read to MLflow, so a failing sink holds that run's
  MLflow writes too (nothing is lost; clients get back-pressure at ``--max-backlog``);
- MLflow's trouble does not hold the sinks back: each flush cycle starts with
  :meth:`Mirror.catch_up` of every run with stored batches (quarantined ones too), before any
  MLflow call, so while MLflow is down, paused or refusing a run the files stay behind by a
  cycle at most (the flush interval, or a second when a cycle is busy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from bridge.convert import event_from_proto
from bridge.events import Event
from bridge.pb.v1 import events_pb2
from server.queue.sqlite import PendingBatch, Queue, RunRecord

_logger = logging.getLogger(__name__)

BATCHES_PER_READ = 16


class SinkFailed(Exception):
    """A sink beside MLflow could not store a run's events (they stay in the queue)."""


class EventSink(Protocol):
    """A sink that holds every event of every run, each once (by its sequence number)."""

    @property
    def name(self) -> str:
        """What ``--sink`` calls it."""

    def written_through(self, record: RunRecord) -> int:
        """The last sequence number of the run the sink holds (0: none)."""

    def write(self, record: RunRecord, events: Sequence[tuple[int, Event]]) -> int:
        """Stores the events ``(seq, event)``, in order, skipping those it holds; returns how
        many it stored. Durable (as the queue's fsync policy) when it returns; raises on
        failure, and the flusher hands the events again."""

    def close(self) -> None:
        """Releases the sink's files."""


class Mirror:
    """Hands a run's stored batches to every event sink."""

    def __init__(self, queue: Queue, sinks: Sequence[EventSink]) -> None:
        self._queue = queue
        self.sinks = tuple(sinks)

    def cover(self, record: RunRecord, batches: Sequence[PendingBatch]) -> int:
        """Makes every sink hold the events of ``batches``; returns the most any sink stored."""
        most = 0
        for sink in self.sinks:
            try:
                events = _events(batches, sink.written_through(record))
                if events:
                    most = max(most, sink.write(record, events))
            except Exception as exc:
                raise SinkFailed(f"the {sink.name} sink failed: {exc}") from exc
        return most

    def ahead(
        self, run_keys: Iterable[str], record: Callable[[str], RunRecord], turn_s: float
    ) -> None:
        """The other sinks get what every run has stored, before MLflow is asked anything:
        MLflow down, paused, or refusing a run holds their data back by a cycle at most."""
        for run_key in run_keys:
            try:
                self.catch_up(record(run_key), time.monotonic() + turn_s)
            except SinkFailed as exc:  # the run's turn fails on it too, and backs off
                _logger.warning("run %s: %s", run_key, exc)

    def catch_up(self, record: RunRecord, until: float) -> bool:
        """Writes what the run has stored and the sinks do not hold, ahead of MLflow; True
        when ``until`` passed with more left."""
        if not self.sinks:
            return False
        try:
            through = min(sink.written_through(record) for sink in self.sinks)
        except Exception as exc:
            raise SinkFailed(f"a sink failed: {exc}") from exc
        while batches := self._queue.pending_after(record.run_key, through, BATCHES_PER_READ):
            self.cover(record, batches)
            through = batches[-1].last_seq
            if len(batches) < BATCHES_PER_READ:
                return False
            if time.monotonic() >= until:
                return True
        return False

    def close(self) -> None:
        """Closes every sink."""
        for sink in self.sinks:
            sink.close()


def _events(batches: Sequence[PendingBatch], after: int) -> list[tuple[int, Event]]:
    out: list[tuple[int, Event]] = []
    for stored in batches:
        if stored.last_seq <= after:
            continue
        msg = events_pb2.EventBatch.FromString(stored.payload)
        for seq, raw in enumerate(msg.events, start=stored.first_seq):
            if seq > after:
                out.append((seq, event_from_proto(raw)))
    return out
