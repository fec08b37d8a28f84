"""Damage inside a spool's pages that SQLite still reads: each payload carries a CRC-32, so
the damaged batch is counted as lost and reported once (a ``Dropped`` report in its place),
never sent to be refused for ever. In process, against a fake receiver."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.convert import batch_to_proto, event_from_proto
from bridge.events import DROPPED_SPOOL_LOST, Dropped, EventBatch, Metric
from bridge.pb.v1 import events_pb2, ingest_pb2
from client_sdk.spool.delivery import Delivery
from client_sdk.spool.file import Spool
from client_sdk.spool.names import Destination, SpoolError

pytestmark = pytest.mark.timeout(30)

TS = 1_700_000_000_000


class _Receiver:
    """Acknowledges every batch it is sent (a fake transport)."""

    def __init__(self) -> None:
        self.batches: list[events_pb2.EventBatch] = []
        self.acked: dict[str, int] = {}

    def publish(self, payload: bytes, timeout_s: float | None = None) -> ingest_pb2.Ack:
        batch = events_pb2.EventBatch.FromString(payload)
        self.batches.append(batch)
        last = batch.first_seq + len(batch.events) - 1
        self.acked[batch.run_key] = max(self.acked.get(batch.run_key, 0), last)
        return ingest_pb2.Ack(run_key=batch.run_key, acked_seq=self.acked[batch.run_key])

    def get_run(self, client_id: str, run_key: str, timeout_s: float | None = None) -> Any:
        return ingest_pb2.Ack(run_key=run_key, acked_seq=self.acked.get(run_key, 0))


def _payload(first: int) -> bytes:
    points = (Metric("x", float(first), first, TS), Metric("x", 0.5, first + 1, TS))
    return batch_to_proto(EventBatch("site", "job", "run", first, points)).SerializeToString()


def test_a_damaged_payload_is_lost_counted_and_reported_once(tmp_path: Path) -> None:
    spool = Spool.create(tmp_path, Destination.of("127.0.0.1:1", "job", "site"))
    try:
        ids = spool.append([("run", f, f + 1, _payload(f)) for f in (1, 3, 5)])
        with sqlite3.connect(spool.path) as conn:  # a flipped byte SQLite cannot see
            damaged = bytearray(_payload(3))
            damaged[-1] ^= 0x01
            conn.execute("UPDATE batches SET payload = ? WHERE id = ?", (bytes(damaged), ids[1]))
        conn.close()
        with pytest.raises(SpoolError, match="damaged"):
            spool.payload(ids[1])

        receiver = _Receiver()
        delivery = Delivery(
            spool,
            receiver,  # type: ignore[arg-type]
            lambda: None,  # type: ignore[arg-type,return-value]
            deadline=lambda: time.monotonic() + 20,
            interrupt=threading.Event(),
        )
        report = delivery.run()
    finally:
        spool.close(delete=False)
    assert (report.events_delivered, report.events_lost) == (4, 2)
    events = [event_from_proto(e) for b in receiver.batches for e in b.events]
    reports = [e for e in events if isinstance(e, Dropped)]
    assert [(d.count, d.reason, d.first_seq, d.last_seq) for d in reports] == [
        (2, DROPPED_SPOOL_LOST, 3, 4)
    ]
    assert sum(isinstance(e, Metric) for e in events) == 4
