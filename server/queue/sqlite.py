"""The receiver's durable queue: accepted batches, per-run sequence marks, dead letters.

Durability: SQLite in WAL mode. A batch is acknowledged only after its transaction commits.
With ``synchronous=NORMAL`` (the default) a commit survives the receiver being killed at any
moment; the last commits before a power loss may be lost. ``synchronous=FULL`` fsyncs every
commit and survives power loss too, at some ingest speed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    job TEXT NOT NULL,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    flushed_seq INTEGER NOT NULL DEFAULT 0,
    mlflow_run_id TEXT NOT NULL DEFAULT '',
    mlflow_experiment_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'RUNNING'
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_run ON batches (run_key, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
"""

SYNCHRONOUS_MODES = ("NORMAL", "FULL")


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The receiver's durable record of one client run."""

    run_key: str
    client_id: str
    job: str
    acked_seq: int
    flushed_seq: int
    mlflow_run_id: str
    mlflow_experiment_id: str
    status: str


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A stored batch not yet written to MLflow."""

    id: int
    run_key: str
    first_seq: int
    last_seq: int
    payload: bytes


def connect(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Opens the queue database (creating it), in WAL mode. One connection per thread."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(_SCHEMA)
    return conn


class Queue:
    """Typed access to the queue database through one connection (one thread at a time)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def runs(self) -> list[RunRecord]:
        """Every run the receiver knows."""
        rows = self._conn.execute(
            "SELECT run_key, client_id, job, acked_seq, flushed_seq, mlflow_run_id,"
            " mlflow_experiment_id, status FROM runs"
        ).fetchall()
        return [RunRecord(*row) for row in rows]

    def store(self, accepted: list[tuple[str, str, str, int, int, bytes]]) -> None:
        """Durably stores batches ``(run_key, client_id, job, first_seq, last_seq, payload)``
        in one transaction, advancing each run's acked mark."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for run_key, client_id, job, first_seq, last_seq, payload in accepted:
                conn.execute(
                    "INSERT INTO runs (run_key, client_id, job, acked_seq) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (run_key) DO UPDATE SET acked_seq = excluded.acked_seq",
                    (run_key, client_id, job, last_seq),
                )
                conn.execute(
                    "INSERT INTO batches (run_key, first_seq, last_seq, payload)"
                    " VALUES (?, ?, ?, ?)",
                    (run_key, first_seq, last_seq, payload),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def runs_with_pending(self) -> list[str]:
        """Run keys that have batches not yet written to MLflow, oldest first."""
        rows = self._conn.execute(
            "SELECT run_key FROM batches GROUP BY run_key ORDER BY MIN(id)"
        ).fetchall()
        return [row[0] for row in rows]

    def pending(self, run_key: str, limit: int) -> list[PendingBatch]:
        """The oldest ``limit`` pending batches of a run, in order."""
        rows = self._conn.execute(
            "SELECT id, run_key, first_seq, last_seq, payload FROM batches"
            " WHERE run_key = ? ORDER BY id LIMIT ?",
            (run_key, limit),
        ).fetchall()
        return [PendingBatch(*row) for row in rows]

    def pending_events(self) -> int:
        """Number of stored events not yet written to MLflow."""
        row = self._conn.execute("SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM batches")
        return int(row.fetchone()[0])

    def pending_count(self) -> int:
        """Number of batches not yet written to MLflow."""
        return int(self._conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])

    def mark_flushed(self, run_key: str, up_to_id: int, flushed_seq: int) -> None:
        """Records that a run's batches up to ``up_to_id`` reached MLflow."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM batches WHERE run_key = ? AND id <= ?", (run_key, up_to_id))
            conn.execute(
                "UPDATE runs SET flushed_seq = MAX(flushed_seq, ?) WHERE run_key = ?",
                (flushed_seq, run_key),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def set_mlflow_run(self, run_key: str, run_id: str, experiment_id: str) -> None:
        """Records the MLflow run a client run maps to."""
        self._conn.execute(
            "UPDATE runs SET mlflow_run_id = ?, mlflow_experiment_id = ? WHERE run_key = ?",
            (run_id, experiment_id, run_key),
        )

    def set_status(self, run_key: str, status: str) -> None:
        """Records the status the run was ended with in MLflow."""
        self._conn.execute("UPDATE runs SET status = ? WHERE run_key = ?", (status, run_key))

    def add_dead_letter(self, run_key: str, kind: str, key: str, value: str, reason: str) -> None:
        """Keeps an entry MLflow refused for good, with MLflow's reason."""
        self._conn.execute(
            "INSERT INTO dead_letters (run_key, kind, key, value, reason, at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (run_key, kind, key, value, reason, time.time_ns() // 1_000_000),
        )

    def dead_letters(self) -> list[tuple[str, str, str, str, str]]:
        """Every dead letter as ``(run_key, kind, key, value, reason)``."""
        rows = self._conn.execute(
            "SELECT run_key, kind, key, value, reason FROM dead_letters ORDER BY id"
        ).fetchall()
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


class Backlog:
    """Events stored but not yet in MLflow; shared by the ingest and flush threads."""

    def __init__(self, initial: int) -> None:
        self._lock = threading.Lock()
        self._events = initial

    def add(self, count: int) -> None:
        """Counts newly stored events."""
        with self._lock:
            self._events += count

    def remove(self, count: int) -> None:
        """Counts events that reached MLflow."""
        with self._lock:
            self._events -= count

    @property
    def events(self) -> int:
        """The current backlog."""
        return self._events
