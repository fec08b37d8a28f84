"""The client's durable spool: serialized batches kept on disk until the receiver acks them.

One SQLite file (WAL, ``synchronous=NORMAL``) per Writer, locked with ``flock`` for the
writer's lifetime: a spool whose lock is free belongs to a client that died, and the next
Writer with the same client id (or ``trackbridge sync``) adopts and delivers it. NORMAL
survives the client process being killed at any moment; a power loss can take the last
commits before it (the events logged in the last moments).
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    payload BLOB NOT NULL
);
"""
_SUFFIX = ".spool.db"


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """A batch on disk (its payload is a serialized ``EventBatch``)."""

    id: int
    run_key: str
    first_seq: int
    last_seq: int


def _safe(client_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", client_id)[:100]


class Spool:
    """One spool file, opened and locked by this process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    @classmethod
    def create(cls, directory: Path, client_id: str) -> Spool:
        """A new spool for a starting Writer."""
        return cls(directory / f"{_safe(client_id)}-{uuid.uuid4().hex[:12]}{_SUFFIX}")

    @classmethod
    def orphans(cls, directory: Path, client_id: str | None = None) -> list[Spool]:
        """Spools in ``directory`` (of ``client_id``, or all) whose writer is gone, now ours."""
        if not directory.is_dir():
            return []
        pattern = f"{_safe(client_id)}-*{_SUFFIX}" if client_id else f"*{_SUFFIX}"
        adopted = []
        for path in sorted(directory.glob(pattern)):
            try:
                adopted.append(cls(path))
            except OSError:
                continue  # a live writer holds it
        return adopted

    def append(self, batches: list[tuple[str, int, int, bytes]]) -> list[int]:
        """Stores ``(run_key, first_seq, last_seq, payload)`` batches in one transaction."""
        conn = self._conn
        ids = []
        conn.execute("BEGIN")
        try:
            for row in batches:
                cur = conn.execute(
                    "INSERT INTO batches (run_key, first_seq, last_seq, payload)"
                    " VALUES (?, ?, ?, ?)",
                    row,
                )
                ids.append(int(cur.lastrowid or 0))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return ids

    def payload(self, batch_id: int) -> bytes:
        """The serialized batch."""
        row = self._conn.execute("SELECT payload FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            raise KeyError(batch_id)
        return bytes(row[0])

    def remove(self, batch_ids: list[int]) -> None:
        """Forgets acknowledged batches."""
        self._conn.executemany("DELETE FROM batches WHERE id = ?", [(i,) for i in batch_ids])

    def batches(self) -> list[SpooledBatch]:
        """Every batch still on disk, oldest first."""
        rows = self._conn.execute(
            "SELECT id, run_key, first_seq, last_seq FROM batches ORDER BY id"
        ).fetchall()
        return [SpooledBatch(*row) for row in rows]

    def size_bytes(self) -> int:
        """Bytes of payload on disk."""
        row = self._conn.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM batches")
        return int(row.fetchone()[0])

    def close(self, *, delete_if_empty: bool = True) -> None:
        """Closes the file and releases the lock; removes the files when nothing is left."""
        empty = not self._conn.execute("SELECT 1 FROM batches LIMIT 1").fetchone()
        self._conn.close()
        if empty and delete_if_empty:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            Path(f"{self.path}.lock").unlink(missing_ok=True)
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    def abandon(self) -> None:
        """In a forked child: let go of the parent's spool without touching its file or lock.

        The inherited SQLite connection must be neither used nor closed in the child (closing
        could checkpoint the parent's WAL), so it is parked for the life of the process.
        """
        _inherited.append(self._conn)
        os.close(self._lock_fd)


_inherited: list[sqlite3.Connection] = []
