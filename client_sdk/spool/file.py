"""One spool: serialized batches kept on disk until the receiver acks them, the destination they
were written for, and a ledger to measure losses against.

The files of a spool with stem ``S`` in the spool directory:

- ``S.spool.db``: SQLite (WAL, ``synchronous=NORMAL``), table ``batches`` (serialized
  ``EventBatch`` payloads, each with its CRC-32) and table ``meta`` (receiver, job, client it was
  written for). NORMAL survives the client being killed at any moment; a power loss can take
  the last commits before it.
- ``S.spool.db.lock``: held with ``flock`` for the writer's lifetime (a spool whose lock is free
  belongs to a writer that died, and may be adopted). It also holds the spool's *ledger*, a
  small JSON record outside the database: the destination again, and per run the last sequence
  number spooled and the last one acknowledged. A database that lost its last commits (a torn
  WAL) or cannot be read at all is measured against it (``client_sdk/spool/delivery.py``).
- ``artifacts/S/``: staged artifact copies with their manifests (``client_sdk/_staging.py``).

Files are created 0600, folders the client creates 0700. A database that cannot be opened or
read is moved aside as ``S.spool.db.corrupt`` (never deleted) and a fresh one takes its place,
so the spool's artifacts and ledger are still delivered and accounted for.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import threading
import uuid
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from client_sdk.spool.ledger import read_ledger, write_ledger
from client_sdk.spool.names import (
    ARTIFACTS_DIR,
    CORRUPT,
    MANIFEST,
    SUFFIX,
    Destination,
    SpoolBusy,
    SpooledBatch,
    SpoolError,
    SpoolGone,
    make_private_dir,
    safe_name,
    sqlite_files,
)

_logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    crc INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Spool:
    """One spool, opened and locked by this process. Safe to share between threads."""

    def __init__(self, path: Path, destination: Destination | None, *, create: bool) -> None:
        self.path = path
        self.destination = destination
        self.stage_dir = path.parent / ARTIFACTS_DIR / path.name.removesuffix(SUFFIX)
        self.damage = ""
        """Why the database had to be moved aside when this spool was opened ("" if it was
        fine); its events are then accounted for by the ledger alone."""
        self.outstanding = 0
        """Batches in the file that the receiver has not acknowledged (as this process knows)."""
        self.artifact_holds = 0
        """Staged artifacts of this spool that this process is still delivering."""
        self._lock = threading.RLock()
        self._ledger: dict[str, list[int]] = {}
        # A new spool's lock is taken before its name appears, so no one adopts it meanwhile.
        lock = f"{path}.lock"
        try:
            self._lock_fd = os.open(
                f"{lock}.new" if create else lock, os.O_CREAT | os.O_RDWR, 0o600
            )
        except OSError as exc:
            raise SpoolError(f"cannot open the spool {path}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if create:
                os.replace(f"{lock}.new", lock)
        except OSError as exc:
            os.close(self._lock_fd)
            if create:
                raise SpoolError(f"cannot create the spool {path}: {exc}") from exc
            raise SpoolBusy(f"{path} is held by a running writer") from None
        if not create and not self._still_there(lock):
            self._release_lock()
            raise SpoolGone(f"{path} was deleted by its writer")
        try:
            self._open(create)
        except BaseException:
            self._release_lock()
            raise

    def _still_there(self, lock: str) -> bool:
        """Whether the spool just locked for adoption still exists. A writer deletes its empty
        spool's database, then its lock file, then lets go of the lock: an adopter may hold
        the lock of a file already unlinked, or have made a new, empty lock file for a spool
        that is gone; opening it then would make an empty spool that records no receiver. (A
        lock file alone, with its ledger in it, is a spool whose database was moved aside.)"""
        try:
            if os.stat(lock).st_ino != os.fstat(self._lock_fd).st_ino:
                return False
        except OSError:
            return False
        if self.path.exists() or os.fstat(self._lock_fd).st_size > 0:
            return True
        Path(lock).unlink(missing_ok=True)
        return False

    @classmethod
    def create(cls, directory: Path, destination: Destination) -> Spool:
        """A new spool for a starting writer; raises SpoolError when it cannot be written."""
        try:
            make_private_dir(directory)
        except OSError as exc:
            raise SpoolError(f"cannot create the spool folder {directory}: {exc}") from exc
        stem = f"{safe_name(destination.client_id)}-{uuid.uuid4().hex[:12]}"
        return cls(directory / f"{stem}{SUFFIX}", destination, create=True)

    @classmethod
    def adopt(cls, path: Path) -> Spool:
        """Opens a spool whose writer is gone; raises SpoolBusy when it is alive.

        A database that cannot be opened or read is moved aside (``damage`` says why) and a
        fresh, empty one takes its place.
        """
        return cls(path, None, create=False)

    # -- opening -------------------------------------------------------------------------------

    def _open(self, create: bool) -> None:
        if create:
            self._write_ledger()
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                self._conn = self._connect(check=False)
                self._write_meta()
            except (sqlite3.Error, OSError) as exc:
                raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
            return
        self._read_ledger()
        try:
            self._conn = self._connect(check=True)
        except (sqlite3.Error, OSError) as exc:
            self.quarantine(f"{type(exc).__name__}: {exc}", opened=False)
            return
        meta = self._read_meta()
        if meta is not None:
            self.destination = meta

    def _connect(self, *, check: bool) -> sqlite3.Connection:
        if not self.path.exists():
            # A spool whose database was moved aside before a fresh one could be made.
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if check:
                rows = conn.execute("PRAGMA quick_check").fetchall()
                if rows != [("ok",)]:
                    raise sqlite3.DatabaseError("; ".join(str(r[0]) for r in rows[:3]))
            conn.executescript(_SCHEMA)
            if "crc" not in {r[1] for r in conn.execute("PRAGMA table_info(batches)")}:
                conn.execute("ALTER TABLE batches ADD COLUMN crc INTEGER")  # an older spool
            self.outstanding = int(conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])
        except BaseException:
            conn.close()
            raise
        return conn

    def quarantine(self, reason: str, *, opened: bool = True) -> None:
        """Moves a database that cannot be read aside (``S.spool.db.corrupt``, kept) and puts a
        fresh one in its place; the spool's artifacts and ledger stay.

        Raises:
            SpoolError: The files cannot be moved or the fresh database made.
        """
        with self._lock:
            if opened:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            self.damage = reason
            try:
                self._move_aside()
                self._conn = self._connect(check=False)
                if self.destination is not None:
                    self._write_meta()
            except (sqlite3.Error, OSError) as exc:
                raise SpoolError(f"cannot move the damaged spool {self.path} aside: {exc}") from exc
            self.outstanding = 0

    def _move_aside(self) -> None:
        # Never over an earlier damaged copy: each one is kept.
        n = 0
        while (aside := self._aside_name(n)).exists():
            n += 1
        for source in sqlite_files(self.path):
            if source.exists():
                suffix = source.name.removeprefix(self.path.name)
                source.replace(aside.with_name(f"{aside.name}{suffix}"))

    def _aside_name(self, n: int) -> Path:
        name = f"{self.path.name}{CORRUPT}" + (f".{n}" if n else "")
        return self.path.with_name(name)

    def _write_meta(self) -> None:
        assert self.destination is not None
        d = self.destination
        self._conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [("receiver", d.receiver), ("job", d.job), ("client_id", d.client_id)],
        )

    def _read_meta(self) -> Destination | None:
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if not {"receiver", "job", "client_id"} <= meta.keys():
            return None  # a spool of an older trackbridge, or one whose database was lost
        return Destination(str(meta["receiver"]), str(meta["job"]), str(meta["client_id"]))

    # -- the ledger (in the lock file) --------------------------------------------------------

    def _read_ledger(self) -> None:
        record = read_ledger(self._lock_fd, self.path)
        if record is not None:
            self.destination, self._ledger = record

    def _write_ledger(self) -> None:
        write_ledger(self._lock_fd, self.destination, self._ledger, self.path)

    def ledger(self) -> dict[str, tuple[int, int]]:
        """Per run: ``(last sequence spooled, last acknowledged)``, as recorded."""
        with self._lock:
            return {k: (v[0], v[1]) for k, v in self._ledger.items()}

    def forget_run(self, run_key: str) -> None:
        """Drops an ended, fully acknowledged run from the ledger (it can lose nothing more)."""
        with self._lock:
            if self._ledger.pop(run_key, None) is not None:
                self._write_ledger()

    # -- batches -------------------------------------------------------------------------------

    def append(self, batches: list[tuple[str, int, int, bytes]]) -> list[int]:
        """Stores ``(run_key, first_seq, last_seq, payload)`` batches in one transaction.

        Raises:
            SpoolError: The file cannot be written (disk full, I/O error, read-only, corrupt).
        """
        with self._lock:
            conn = self._conn
            ids = []
            try:
                conn.execute("BEGIN")
                for row in batches:
                    cur = conn.execute(
                        "INSERT INTO batches (run_key, first_seq, last_seq, payload, crc)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (*row, zlib.crc32(row[3])),
                    )
                    ids.append(int(cur.lastrowid or 0))
                conn.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:  # SQLite may have rolled back by itself (disk full)
                        conn.execute("ROLLBACK")
                raise SpoolError(f"cannot write the spool {self.path}: {exc}") from exc
            self.outstanding += len(ids)
            for run_key, _first, last, _payload in batches:
                mark = self._ledger.setdefault(run_key, [0, 0])
                mark[0] = max(mark[0], last)
            self._write_ledger()
        return ids

    def payload(self, batch_id: int) -> bytes:
        """The serialized batch.

        Raises:
            SpoolError: The file cannot be read (or has lost the batch).
        """
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT payload, crc FROM batches WHERE id = ?", (batch_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        if row is None:
            raise SpoolError(f"batch {batch_id} is missing from the spool {self.path}")
        payload = bytes(row[0])
        # Damage SQLite still reads: lost, counted and reported once (never resent for ever).
        if row[1] is not None and zlib.crc32(payload) != row[1]:
            raise SpoolError(f"batch {batch_id} in the spool {self.path} is damaged (checksum)")
        return payload

    def remove(self, batch_ids: list[int], acked: Mapping[str, int]) -> None:
        """Forgets acknowledged batches; ``acked`` is each run's acknowledged sequence.

        The ledger is updated first, so a crash in between leaves batches that are sent again
        (and dropped by the receiver as already seen) rather than a loss that looks real. A
        delete the disk refuses (disk full) is not retried: the batches count as gone, and the
        file is deleted whole once nothing in it is needed.
        """
        with self._lock:
            for run_key, seq in acked.items():
                mark = self._ledger.setdefault(run_key, [seq, 0])
                mark[1] = max(mark[1], seq)
            self._write_ledger()
            self.outstanding = max(0, self.outstanding - len(batch_ids))
            try:
                self._conn.executemany(
                    "DELETE FROM batches WHERE id = ?", [(i,) for i in batch_ids]
                )
            except sqlite3.Error as exc:
                _logger.debug("trackbridge: could not delete acked batches from %s: %s", self, exc)

    def batches(self) -> list[SpooledBatch]:
        """Every batch still on disk, oldest first.

        Raises:
            SpoolError: The file cannot be read.
        """
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT id, run_key, first_seq, last_seq FROM batches ORDER BY id"
                ).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the spool {self.path}: {exc}") from exc
        return [SpooledBatch(*row) for row in rows]

    def outstanding_events(self) -> int:
        """Events in the batches on disk (0 when they cannot be read)."""
        try:
            return sum(b.last_seq - b.first_seq + 1 for b in self.batches())
        except SpoolError:
            return 0

    def manifests(self) -> Iterator[Path]:
        """The manifests of this spool's staged artifacts."""
        if self.stage_dir.is_dir():
            yield from sorted(self.stage_dir.glob(f"*/{MANIFEST}"))

    @property
    def idle(self) -> bool:
        """Nothing in this spool is still needed, as far as this process knows."""
        return self.outstanding == 0 and self.artifact_holds == 0

    # -- closing -------------------------------------------------------------------------------

    def close(self, *, delete: bool = True) -> bool:
        """Closes the file and releases the lock; with ``delete``, deletes the spool when
        nothing in it is still needed (no unacknowledged batch, no staged artifact). Returns
        whether it did."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            empty = delete and self.idle and next(self.manifests(), None) is None
            if empty:
                for path in sqlite_files(self.path):
                    path.unlink(missing_ok=True)
                shutil.rmtree(self.stage_dir, ignore_errors=True)
                Path(f"{self.path}.lock").unlink(missing_ok=True)
            self._release_lock()
        return empty

    def _release_lock(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    def abandon(self) -> None:
        """In a forked child: let go of the parent's spool without touching its file or lock.

        The inherited SQLite connection must be neither used nor closed in the child (closing
        could checkpoint the parent's WAL), so it is parked for the life of the process.
        """
        _inherited.append(self._conn)
        os.close(self._lock_fd)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"


_inherited: list[sqlite3.Connection] = []
