"""What the sender holds per run: serialized batches awaiting their ack, and how buffered
events become those batches."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from bridge.convert import event_to_proto, metric_to_proto
from bridge.events import DROPPED_BUFFER_FULL, Dropped, Event, RunEnd, RunStart
from bridge.pb.v1 import events_pb2
from client_sdk.config import WriterConfig
from client_sdk.spool.file import Spool

_logger = logging.getLogger(__name__)

BufferItem = (
    tuple[str, Event]
    | tuple[str, str, object, int, int]
    | tuple[str, str, object, int, int, int, int]
)
"""What the writer buffers: ``(run_key, event)``, or a metric point as
``(run_key, key, value, step, timestamp_ms)`` (the hot path's allocation-light form), with
``round, num_examples`` after them when it has a round or a weight."""


@dataclass(slots=True)
class Pending:
    """A serialized batch the receiver has not acknowledged yet."""

    first_seq: int
    last_seq: int
    payload: bytes | None
    """The batch, or None when it is held only in ``spool`` (memory pressure)."""
    size: int
    """Bytes of the serialized batch."""
    spool: Spool | None = None
    spool_id: int = 0
    report: bool = False
    """The batch is a dropped-events report (one event the user did not log)."""

    @property
    def events(self) -> int:
        """Events the user logged in this batch."""
        return 0 if self.report else self.last_seq - self.first_seq + 1

    def load(self) -> bytes:
        """The serialized batch, from memory or from the spool (raises SpoolError)."""
        if self.payload is not None:
            return self.payload
        assert self.spool is not None
        return self.spool.payload(self.spool_id)


@dataclass(slots=True)
class RunState:
    """What the sender knows of one run."""

    key: str
    next_seq: int = 1
    pending: deque[Pending] = field(default_factory=deque)
    acked_seq: int = 0
    run_id: str = ""
    experiment_id: str = ""
    chosen: tuple[str, str] = ("", "")
    """The experiment (name, id) the run's start chose, carried on every batch of the run, so
    a receiver that never got the start still puts the run there."""
    ended: bool = False
    last_contact: float = field(default_factory=time.monotonic)
    """Monotonic time of the last exchange with the receiver about this run."""

    def pending_events(self) -> int:
        """Events sent or waiting to be sent, not yet acknowledged."""
        return sum(p.events for p in self.pending)


@dataclass(slots=True)
class SenderStats:
    """Counters of the sender's work, for status reports and tests."""

    batches_sent: int = 0
    events_acked: int = 0
    send_failures: int = 0
    events_rejected: int = 0
    cycle_errors: int = 0
    events_lost: int = 0
    """Spooled events whose batch could no longer be read (reported to the receiver)."""


class DropCounter:
    """Events the writer dropped because its buffer was full, per run, until the sender reports
    them to the receiver. ``add`` is called on the logging thread (only when the buffer is
    full), ``take`` and ``put_back`` on the sender thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self._runs: dict[str, list[int]] = {}

    def add(self, run_key: str) -> int:
        """Counts one dropped event of ``run_key``; returns the writer's total."""
        now = time.time_ns() // 1_000_000
        with self._lock:
            self.total += 1
            entry = self._runs.setdefault(run_key, [0, now, now])
            entry[0] += 1
            entry[2] = now
            return self.total

    def lost(self, count: int) -> None:
        """Counts ``count`` events dropped after the call (the sender could not encode them,
        or the receiver refused their batch): in ``dropped_events``, never silent."""
        with self._lock:
            self.total += count

    @property
    def due(self) -> bool:
        """Whether some drops are not reported yet."""
        return bool(self._runs)

    def take(self) -> list[tuple[str, Dropped]]:
        """The reports due, one per run; the counter starts again from zero for each run."""
        with self._lock:
            runs, self._runs = self._runs, {}
        return [(k, Dropped(n, DROPPED_BUFFER_FULL, 0, 0, a, b)) for k, (n, a, b) in runs.items()]

    def put_back(self, reports: list[tuple[str, Dropped]]) -> None:
        """Reports that could not be spooled: they are merged into the next ones."""
        with self._lock:
            for run_key, d in reports:
                entry = self._runs.setdefault(run_key, [0, d.first_ms, d.last_ms])
                entry[0] += d.count
                entry[1] = min(entry[1], d.first_ms)
                entry[2] = max(entry[2], d.last_ms)


@dataclass(slots=True)
class Built:
    """A batch serialized and numbered, not yet spooled (its numbers are taken once it is)."""

    run: RunState
    first: int
    last: int
    payload: bytes
    rejected: int
    """Events that could not be encoded (dropped, counted)."""
    report: bool
    """A dropped-events report rather than events the user logged."""
    ends: bool
    """Its last event ends the run."""


def build(
    config: WriterConfig,
    runs: dict[str, RunState],
    items: list[BufferItem],
    reports: list[tuple[str, Dropped]],
) -> list[Built]:
    """``items`` as batches per run numbered from each run's ``next_seq``, then one batch per
    report (every run named must be in ``runs``)."""
    per_run: dict[str, list[BufferItem]] = {}
    for item in items:
        per_run.setdefault(item[0], []).append(item)
    seqs = {key: runs[key].next_seq for key in {*per_run, *(k for k, _ in reports)}}
    built: list[Built] = []
    for run_key, events in per_run.items():
        ends = len(events[-1]) == 2 and isinstance(events[-1][1], RunEnd)
        for item in events:
            if len(item) == 2 and isinstance(start := item[1], RunStart):
                runs[run_key].chosen = (start.experiment, start.experiment_id)
        for payload, count, rejected in serialize(config, runs[run_key], seqs[run_key], events):
            first = seqs[run_key]
            seqs[run_key] += count
            built.append(
                Built(runs[run_key], first, first + count - 1, payload, rejected, False, ends)
            )
    for run_key, dropped in reports:
        seq = seqs[run_key]
        seqs[run_key] += 1
        payload = report_batch(config, runs[run_key], seq, dropped)
        built.append(Built(runs[run_key], seq, seq, payload, 0, True, False))
    return built


def report_batch(config: WriterConfig, run: RunState, seq: int, dropped: Dropped) -> bytes:
    """A batch of one event: the report ``dropped``, numbered ``seq``."""
    msg = events_pb2.EventBatch(
        client_id=config.client_id,
        job=config.job,
        run_key=run.key,
        first_seq=seq,
        experiment=run.chosen[0],
        experiment_id=run.chosen[1],
    )
    event_to_proto(dropped, msg.events.add())
    return msg.SerializeToString()


# A batch larger than this is split before sending (gRPC's default limit is 4 MiB).
_MAX_BATCH_BYTES = 2 * 1024 * 1024


def serialize(
    config: WriterConfig, run: RunState, first_seq: int, events: list[BufferItem]
) -> list[tuple[bytes, int, int]]:
    """Serialized batches of ``events`` of ``run``, numbered from ``first_seq``:
    ``(payload, events in it, events it could not encode)``."""
    out = []
    seq = first_seq
    start = 0
    while start < len(events):
        count = min(len(events) - start, config.max_batch_events)
        while True:
            msg = events_pb2.EventBatch(
                client_id=config.client_id,
                job=config.job,
                run_key=run.key,
                first_seq=seq,
                experiment=run.chosen[0],
                experiment_id=run.chosen[1],
            )
            add = msg.events.add
            for item in events[start : start + count]:
                try:
                    if len(item) == 5:
                        metric_to_proto(item[1], item[2], item[3], item[4], add())
                    elif len(item) == 7:
                        metric_to_proto(item[1], item[2], item[3], item[4], add(), *item[5:])
                    else:
                        event_to_proto(item[1], add())
                except (ValueError, TypeError) as exc:
                    # The writer validates at the call site; this is a last line of
                    # defence, so that an event the wire cannot carry costs only itself.
                    del msg.events[-1]
                    _logger.error("trackbridge: dropping an event it cannot encode: %s", exc)
            if count == 1 or msg.ByteSize() <= _MAX_BATCH_BYTES:
                break
            count //= 2
        if msg.events:
            out.append((msg.SerializeToString(), len(msg.events), count - len(msg.events)))
        seq += len(msg.events)
        start += count
    return out
