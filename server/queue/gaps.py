"""Gaps in a run's sequence, recorded instead of accepted silently (table ``gaps`` of
``queue.db``).

Three kinds:

- ``skipped``: a batch started past the run's acknowledged mark, so sequence numbers
  ``first_seq..last_seq`` never reached this receiver. Normal when a client moves between
  receivers (another one has them); otherwise they were lost on the way.
- ``dropped``: the client reported events it lost (a ``Dropped`` event: its buffer was full
  while its spool could not be written, or its spool was damaged), ``count`` of them. The
  flusher sets the run's total on the MLflow run as the tag ``trackbridge.dropped_events``.
- ``damaged``: a batch this receiver stored failed its checksum when read back; its events
  are lost (server/queue/checksum.py).

Rows are keyed by (run, kind, sequence number), so a batch stored or flushed twice records its
gap once.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from bridge.events import Dropped, Tag
from bridge.pb.v1 import events_pb2

_logger = logging.getLogger(__name__)

TAG_DROPPED = "trackbridge.dropped_events"
"""Set by the receiver on a client's MLflow run: events the client reported lost, in all."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS gaps (
    run_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (run_key, kind, seq)
);
"""


class Noted:
    """What the batches of one store turned up, to record with them."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, int, int]] = []
        self.reports: list[tuple[str, int, events_pb2.Dropped]] = []

    def see(self, key: str, batch: events_pb2.EventBatch, acked_seq: int) -> None:
        """Notes a batch of the run queued under ``key`` (its owned key), about to be stored
        over the run's acknowledged ``acked_seq``."""
        if batch.first_seq > acked_seq + 1:
            self.skipped.append((key, acked_seq + 1, batch.first_seq - 1))
        if len(batch.events) == 1 and batch.events[0].HasField("dropped"):  # always sent alone
            self.reports.append((key, batch.first_seq, batch.events[0].dropped))

    def __bool__(self) -> bool:
        return bool(self.skipped or self.reports)


class GapLog:
    """Records gaps through one connection to ``queue.db`` (one thread at a time)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.executescript(SCHEMA)

    def record(self, noted: Noted) -> None:
        """Records, as their batches are stored, the ranges this receiver never got and the
        clients' reports of lost events."""
        now = time.time_ns() // 1_000_000
        self._conn.executemany(
            "INSERT OR IGNORE INTO gaps (run_key, kind, seq, first_seq, last_seq, count,"
            " reason, at_ms) VALUES (?, 'skipped', ?, ?, ?, ?, '', ?)",
            [
                (run, first, first, last, last - first + 1, now)
                for run, first, last in noted.skipped
            ],
        )
        for run_key, seq, d in noted.reports:
            report = Dropped(d.count, d.reason, d.first_seq, d.last_seq, d.first_ms, d.last_ms)
            self._dropped(run_key, seq, report)

    def dropped(self, run_key: str, seq: int, report: Dropped) -> Tag:
        """Records a client's report of lost events (at sequence ``seq``, as it reaches
        MLflow); returns the tag that puts the run's total on its MLflow run."""
        self._dropped(run_key, seq, report)
        row = self._conn.execute(
            "SELECT COALESCE(SUM(count), 0) FROM gaps WHERE run_key = ? AND kind = 'dropped'",
            (run_key,),
        ).fetchone()
        return Tag(TAG_DROPPED, str(int(row[0])))

    def _dropped(self, run_key: str, seq: int, report: Dropped) -> None:
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO gaps (run_key, kind, seq, first_seq, last_seq, count, reason,"
            " at_ms) VALUES (?, 'dropped', ?, ?, ?, ?, ?, ?)",
            (run_key, seq, report.first_seq, report.last_seq, report.count, report.reason,
             report.last_ms or time.time_ns() // 1_000_000),
        )  # fmt: skip
        if cur.rowcount:
            _logger.warning(
                "run %s: its client reports %d events lost (%s)",
                run_key,
                report.count,
                report.reason,
            )


def read_gaps(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every recorded gap, oldest first ([] for a queue that predates the table)."""
    try:
        rows = conn.execute(
            "SELECT run_key, kind, first_seq, last_seq, count, reason, at_ms FROM gaps"
            " ORDER BY at_ms, run_key, seq"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    names = ("run_key", "kind", "first_seq", "last_seq", "count", "reason", "at_ms")
    return [dict(zip(names, row, strict=True)) for row in rows]


def format_gaps(gaps: list[dict[str, Any]]) -> list[str]:
    """Lines for ``trackbridge status``."""
    if not gaps:
        return []
    dropped = sum(g["count"] for g in gaps if g["kind"] == "dropped")
    damaged = sum(g["count"] for g in gaps if g["kind"] == "damaged")
    lost = f"{dropped} events reported lost by their clients"
    if damaged:
        lost += f", {damaged} lost to damage in this receiver's queue"
    lines = [f"sequence gaps: {len(gaps)} ({lost})"]
    for g in gaps:
        if g["kind"] == "damaged":
            lines.append(
                f"  run {g['run_key']}: events {g['first_seq']}-{g['last_seq']} are lost:"
                f" {g['reason']}"
            )
        elif g["kind"] == "skipped":
            lines.append(
                f"  run {g['run_key']}: events {g['first_seq']}-{g['last_seq']} never reached"
                " this receiver (another receiver has them, or they were lost)"
            )
        else:
            where = f" (events {g['first_seq']}-{g['last_seq']})" if g["first_seq"] else ""
            lines.append(
                f"  run {g['run_key']}: its client lost {g['count']} events{where}: {g['reason']}"
            )
    return lines
