"""What the sender holds per run: serialized batches awaiting their ack, and how buffered
events become those batches."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from bridge.convert import event_to_proto, metric_to_proto
from bridge.events import Event
from bridge.pb.v1 import events_pb2
from client_sdk.config import WriterConfig
from client_sdk.spool import Spool

_logger = logging.getLogger(__name__)

BufferItem = tuple[str, Event] | tuple[str, str, object, int, int]
"""What the writer buffers: ``(run_key, event)``, or a metric point as
``(run_key, key, value, step, timestamp_ms)`` (the hot path's allocation-light form)."""


@dataclass(slots=True)
class Pending:
    """A serialized batch the receiver has not acknowledged yet."""

    first_seq: int
    last_seq: int
    payload: bytes | None
    """The batch, or None when it is held only in ``spool`` (memory pressure, adoption)."""
    spool: Spool | None = None
    spool_id: int = 0

    def load(self) -> bytes:
        """The serialized batch, from memory or from the spool."""
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
    ended: bool = False
    last_contact: float = field(default_factory=time.monotonic)
    """Monotonic time of the last exchange with the receiver about this run."""

    def pending_events(self) -> int:
        """Events sent or waiting to be sent, not yet acknowledged."""
        return sum(p.last_seq - p.first_seq + 1 for p in self.pending)


@dataclass(slots=True)
class SenderStats:
    """Counters of the sender's work, for status reports and tests."""

    batches_sent: int = 0
    events_acked: int = 0
    send_failures: int = 0
    events_rejected: int = 0
    cycle_errors: int = 0


# A batch larger than this is split before sending (gRPC's default limit is 4 MiB).
_MAX_BATCH_BYTES = 2 * 1024 * 1024


def serialize(
    config: WriterConfig, run_key: str, first_seq: int, events: list[BufferItem]
) -> list[tuple[bytes, int, int]]:
    """Serialized batches of ``events``, numbered from ``first_seq``:
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
                run_key=run_key,
                first_seq=seq,
            )
            add = msg.events.add
            for item in events[start : start + count]:
                try:
                    if len(item) == 5:
                        metric_to_proto(item[1], item[2], item[3], item[4], add())
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
