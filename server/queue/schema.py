"""The queue database's schema, its upgrades, and opening it safely.

``queue.db`` holds every payload a client sent, so it is created 0600 (SQLite gives its ``-wal``
and ``-shm`` files the main file's mode). A file SQLite cannot read raises
:class:`QueueCorrupt`, whose message names the file and the way out; nothing here ever deletes
or rewrites a damaged file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from bridge.errors import StartupError
from server.queue.aggregates import SCHEMA as AGGREGATE_TABLES

QUEUE_FILE = "queue.db"

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

ADDED_COLUMNS = (
    # Why a run is held back from MLflow ("" when it is not), and since when.
    ("runs", "quarantine", "TEXT NOT NULL DEFAULT ''"),
    ("runs", "quarantined_ms", "INTEGER NOT NULL DEFAULT 0"),
    # Events of the run MLflow holds (dead letters excluded), for `status`.
    ("runs", "written_events", "INTEGER NOT NULL DEFAULT 0"),
    # The log_batch call in flight: "<last seq> <token>" (see server/flush/writing.py).
    ("runs", "inflight", "TEXT NOT NULL DEFAULT ''"),
    # The run's start event (serialized), to create the run again in another MLflow store.
    ("runs", "start_event", "BLOB"),
    # Events of the batch up to this sequence number are written already.
    ("batches", "done_seq", "INTEGER NOT NULL DEFAULT 0"),
    # The refused event itself (a one-event EventBatch), for `trackbridge dead-letters replay`.
    ("dead_letters", "seq", "INTEGER NOT NULL DEFAULT 0"),
    ("dead_letters", "payload", "BLOB"),
    # The experiment (name, id) the batch's run chose at its start, as every batch carries it
    # ("" from clients that predate it): the run is created or found there even when this
    # receiver never got its start.
    ("batches", "experiment", "TEXT NOT NULL DEFAULT ''"),
    ("batches", "experiment_id", "TEXT NOT NULL DEFAULT ''"),
    # CRC-32 of the payload, checked on every read (NULL: stored before checksums, unchecked).
    ("batches", "crc", "INTEGER"),
    # 1 once a create_run of the run's MLflow run may have left this receiver (a crash or a
    # lost answer may hide a run MLflow made): it is looked for by its key tag before it is
    # created again. A run first stored sets 0 (server/queue/sqlite.py); a run of an older
    # queue, whose receiver kept no such mark, counts as tried.
    ("runs", "create_tried", "INTEGER NOT NULL DEFAULT 1"),
)
"""Columns added since the first release; an older queue gets them when it is opened."""

SYNCHRONOUS_MODES = ("NORMAL", "FULL")


class QueueCorrupt(StartupError):
    """The queue database cannot be read; the message names the file and the recovery step."""

    def __init__(self, path: Path, cause: BaseException) -> None:
        super().__init__(
            f"queue database {path} is damaged ({cause}): nothing was changed; stop the receiver,"
            " keep the file, and follow `trackbridge doctor --data-dir"
            f" {path.parent}` to recover what it holds"
        )
        self.path = path


def connect(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Opens the queue database (creating it 0600), in WAL mode, upgraded to this schema.

    Raises:
        QueueCorrupt: The file is not a readable SQLite database.
    """
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, got {synchronous!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        # Back to 4 MiB once a checkpoint has emptied it: a log that grew while the flusher's
        # reads held checkpoints back must not keep its disk space (server/ingest/disk.py).
        conn.execute(f"PRAGMA journal_size_limit={4 * 1024 * 1024}")
        conn.executescript(SCHEMA)
        conn.executescript(AGGREGATE_TABLES)
        _upgrade(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise QueueCorrupt(path, exc) from None
    return conn


def open_read_only(path: Path) -> sqlite3.Connection:
    """Opens an existing queue for reading (safe beside a running receiver).

    Raises:
        FileNotFoundError: There is no queue at ``path``.
        QueueCorrupt: The file is not a readable SQLite database.
    """
    if not path.exists():
        raise FileNotFoundError(f"no receiver queue at {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise QueueCorrupt(path, exc) from None
    return conn


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns a table has (an older queue opened read-only lacks the added ones)."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _upgrade(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration in ADDED_COLUMNS:
            if column not in columns(conn, table):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
