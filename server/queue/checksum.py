"""Stored payloads carry a CRC-32, checked on every read of the queue.

SQLite checks its own pages, not what a damaged disk or a stray write did to the bytes inside a
row: a payload that fails its checksum is never decoded (a damaged protobuf may decode into
other events), never written to MLflow and never read again. It leaves the queue in one
transaction that records its events as lost (a gap of kind ``damaged`` on the run, which
``trackbridge status`` lists) and adds them to the meta counter behind
``trackbridge_events_damaged``; one log line names the run. The run's other batches, and every
other run, go on.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import zlib

from server.queue.gaps import SCHEMA as GAPS_SCHEMA

_logger = logging.getLogger(__name__)

DAMAGED = "damaged_events"
"""Meta counter: events whose stored batch failed its checksum, lost."""
REASON = "its stored batch failed its checksum (the queue file was damaged)"


def checksum(payload: bytes) -> int:
    """The CRC-32 a payload is stored with."""
    return zlib.crc32(payload)


def intact(payload: bytes, crc: int | None) -> bool:
    """Whether a stored payload matches its checksum (rows stored before checksums pass)."""
    return crc is None or zlib.crc32(payload) == crc


def set_aside(
    conn: sqlite3.Connection, batch_id: int, run_key: str, first: int, last_seq: int
) -> int | None:
    """Takes a damaged batch out of the queue, recording its unwritten events ``first`` to
    ``last_seq`` as lost; returns how many (0 when they were recorded before), None when the
    connection cannot write (a read-only one: the flusher's sets it aside)."""
    count = last_seq - first + 1
    try:
        conn.execute("SAVEPOINT set_aside")
    except sqlite3.OperationalError:
        return None
    try:
        conn.execute(GAPS_SCHEMA)  # one statement; a receiver's GapLog made it already
        new = conn.execute(
            "INSERT OR IGNORE INTO gaps (run_key, kind, seq, first_seq, last_seq, count, reason,"
            " at_ms) VALUES (?, 'damaged', ?, ?, ?, ?, ?, ?)",
            (run_key, first, first, last_seq, count, REASON, time.time_ns() // 1_000_000),
        ).rowcount
        conn.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
        if new:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (DAMAGED, count),
            )
        conn.execute("RELEASE set_aside")
    except sqlite3.OperationalError:  # a read-only connection: the flusher's sets it aside
        conn.execute("ROLLBACK TO set_aside")
        conn.execute("RELEASE set_aside")
        return None
    if not new:
        return 0
    _logger.error(
        "run %s: events %d-%d are lost: %s; the run's other events go on",
        run_key,
        first,
        last_seq,
        REASON,
    )
    return count


def damaged_events(conn: sqlite3.Connection) -> int:
    """Events lost to damaged stored batches, ever."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (DAMAGED,)).fetchone()
    return int(row[0]) if row else 0
