"""The receiver's durable queue: accepted batches, per-run marks, progress, dead letters.

Durability: SQLite in WAL mode. A batch is acknowledged only after its transaction commits.
With ``synchronous=NORMAL`` (the default) a commit survives the receiver being killed at any
moment; the last commits before a power loss may be lost. ``synchronous=FULL`` fsyncs every
commit and survives power loss too, at some ingest speed. Progress into MLflow is recorded per
``log_batch`` call (:meth:`Queue.advance`), under the same policy: after a power loss the
receiver may write again what it had written just before, which MLflow absorbs.

A run MLflow refuses for good is *quarantined*: its batches stay here, held, until
``trackbridge dead-letters replay`` releases them (server/queue/dead_letters.py).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.queue.checksum import checksum, damaged_events, intact, set_aside
from server.queue.schema import SYNCHRONOUS_MODES, connect

__all__ = [
    "SYNCHRONOUS_MODES",
    "Backlog",
    "DeadLetter",
    "Held",
    "PendingBatch",
    "Queue",
    "RunRecord",
    "Stored",
    "connect",
]

REQUEUED = "requeued_events"
"""Meta counter: events put back into ``batches`` by a replay (the flusher adds them to its
backlog)."""

_RUN_COLUMNS = (
    "run_key, client_id, job, acked_seq, flushed_seq, mlflow_run_id, mlflow_experiment_id,"
    " status, quarantine, written_events, inflight, start_event, create_tried"
)
# Events of a batch not written yet (done_seq marks a batch written in part).
REMAINING = "(last_seq - MAX(first_seq - 1, done_seq))"
_BATCH_COLUMNS = (
    "id, run_key, first_seq, last_seq, payload, done_seq, experiment, experiment_id, crc"
)

Stored = tuple[str, str, str, int, int, bytes] | tuple[str, str, str, int, int, bytes, str, str]
"""A batch to store: ``(run_key, client_id, job, first_seq, last_seq, payload)``, then the
experiment name and id its run's start chose, as the batch carries them (absent: "")."""


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
    quarantine: str = ""
    """Why MLflow refuses the run for good ("" when it flows)."""
    written_events: int = 0
    inflight: str = ""
    """The log_batch call that was in flight: ``"<last seq> <token>"``, "" when none."""
    start_event: bytes | None = None
    """The run's start (a serialized ``Event``) once the flusher has written it."""
    create_tried: bool = True
    """A create_run of its MLflow run may have left this receiver (see
    :meth:`Queue.mark_create_tried`); False only while none can have."""


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A stored batch not yet (or not wholly) written to MLflow."""

    id: int
    run_key: str
    first_seq: int
    last_seq: int
    payload: bytes
    done_seq: int = 0
    """Events up to this sequence number are written already."""
    experiment: str = ""
    """The experiment name the run's start chose, as the batch carried it ("" when not)."""
    experiment_id: str = ""
    """The experiment id the run's start chose, as the batch carried it ("" when not)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event MLflow refused for good, kept with its reason (and itself, for replay)."""

    kind: str
    key: str
    value: str
    reason: str
    seq: int
    payload: bytes
    """A one-event ``EventBatch`` of the refused event."""


@dataclass(frozen=True, slots=True)
class Held:
    """What a quarantined run holds back."""

    run_key: str
    reason: str
    since_ms: int
    batches: int
    events: int


class Queue:
    """Typed access to the queue database through one connection (one thread at a time)."""

    def __init__(self, conn: sqlite3.Connection, backlog: Backlog | None = None) -> None:
        self._conn = conn
        self._backlog = backlog
        """Told of the events of batches set aside as damaged (server/queue/checksum.py)."""

    def runs(self) -> list[RunRecord]:
        """Every run the receiver knows."""
        rows = self._conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs").fetchall()
        return [RunRecord(*row) for row in rows]

    def run(self, run_key: str) -> RunRecord | None:
        """One run's record."""
        row = self._conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_key = ?", (run_key,)
        ).fetchone()
        return RunRecord(*row) if row else None

    def store(
        self, accepted: list[Stored], also: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        """Durably stores batches in one transaction, each with its payload's checksum,
        advancing each run's acked mark; ``also`` writes in the same transaction (the
        aggregates' inputs, server/queue/aggregates.py)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for run_key, client_id, job, first_seq, last_seq, payload, *chosen in accepted:
                exp, exp_id = chosen or ("", "")
                conn.execute(
                    "INSERT INTO runs (run_key, client_id, job, acked_seq, create_tried)"
                    " VALUES (?, ?, ?, ?, 0)"
                    " ON CONFLICT (run_key) DO UPDATE SET acked_seq = excluded.acked_seq",
                    (run_key, client_id, job, last_seq),
                )
                conn.execute(
                    "INSERT INTO batches (run_key, first_seq, last_seq, payload, experiment,"
                    " experiment_id, crc) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run_key, first_seq, last_seq, payload, exp, exp_id, checksum(payload)),
                )
            if also is not None:
                also(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on a full disk
                conn.execute("ROLLBACK")
            raise

    def runs_with_pending(self) -> list[str]:
        """Keys of runs that are not quarantined and have batches to write, oldest first."""
        rows = self._conn.execute(
            "SELECT b.run_key FROM batches b JOIN runs r ON r.run_key = b.run_key"
            " WHERE r.quarantine = '' GROUP BY b.run_key ORDER BY MIN(b.id)"
        ).fetchall()
        return [row[0] for row in rows]

    def pending(self, run_key: str, limit: int) -> list[PendingBatch]:
        """The oldest ``limit`` pending batches of a run, in order; damaged ones are set aside
        (server/queue/checksum.py), never returned."""
        sql = f"SELECT {_BATCH_COLUMNS} FROM batches WHERE run_key = ? ORDER BY id LIMIT ?"
        while True:
            rows = self._conn.execute(sql, (run_key, limit)).fetchall()
            good, removed = self._intact(rows)
            if not removed or len(rows) < limit:
                return good
            # Some were set aside: read again, so a full read is never cut short by them.

    def pending_after(self, run_key: str, seq: int, limit: int) -> list[PendingBatch]:
        """The oldest ``limit`` pending batches of a run that hold events after ``seq``
        (damaged ones set aside, as :meth:`pending` does)."""
        rows = self._conn.execute(
            f"SELECT {_BATCH_COLUMNS} FROM batches"
            " WHERE run_key = ? AND last_seq > ? ORDER BY id LIMIT ?",
            (run_key, seq, limit),
        ).fetchall()
        return self._intact(rows)[0]

    def _intact(self, rows: list[tuple[object, ...]]) -> tuple[list[PendingBatch], bool]:
        """The intact batches of ``rows``, and whether damaged ones left the queue."""
        good, removed = [], False
        for *fields, crc in rows:
            batch = PendingBatch(*fields)  # type: ignore[arg-type]
            if intact(batch.payload, crc):  # type: ignore[arg-type]
                good.append(batch)
                continue
            first = max(batch.first_seq, batch.done_seq + 1)
            lost = set_aside(self._conn, batch.id, batch.run_key, first, batch.last_seq)
            removed = removed or lost is not None
            if lost and self._backlog is not None:
                self._backlog.remove(lost)
        return good, removed

    def pending_events(self) -> int:
        """Number of stored events not yet written to MLflow (held ones included)."""
        row = self._conn.execute(f"SELECT COALESCE(SUM({REMAINING}), 0) FROM batches")
        return int(row.fetchone()[0])

    def pending_count(self) -> int:
        """Number of batches not yet written to MLflow (held ones included)."""
        return int(self._conn.execute("SELECT COUNT(*) FROM batches").fetchone()[0])

    def flushable_count(self) -> int:
        """Number of batches waiting for MLflow, not counting those quarantined runs hold."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM batches b JOIN runs r ON r.run_key = b.run_key"
            " WHERE r.quarantine = ''"
        )
        return int(row.fetchone()[0])

    def advance(
        self,
        run_key: str,
        done_ids: Sequence[int],
        partial: tuple[int, int] | None,
        *,
        flushed_seq: int,
        written: int,
        dead: Sequence[DeadLetter] = (),
    ) -> None:
        """Records one step of a run into MLflow, in one transaction: the batches ``done_ids``
        are written whole, ``partial`` (batch id, sequence) up to that event; ``written``
        events reached MLflow, ``dead`` were refused for good. Clears the in-flight mark."""
        conn = self._conn
        now_ms = time.time_ns() // 1_000_000
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("DELETE FROM batches WHERE id = ?", [(i,) for i in done_ids])
            if partial is not None:
                conn.execute("UPDATE batches SET done_seq = ? WHERE id = ?", partial[::-1])
            conn.execute(
                "UPDATE runs SET flushed_seq = MAX(flushed_seq, ?), inflight = '',"
                " written_events = written_events + ? WHERE run_key = ?",
                (flushed_seq, written, run_key),
            )
            conn.executemany(
                "INSERT INTO dead_letters (run_key, kind, key, value, reason, at_ms, seq, payload)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_key, d.kind, d.key, d.value, d.reason, now_ms, d.seq, d.payload)
                    for d in dead
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on a full disk
                conn.execute("ROLLBACK")
            raise

    def set_inflight(self, run_key: str, marker: str) -> None:
        """Records the log_batch call about to be made ("" once it is done)."""
        self._conn.execute("UPDATE runs SET inflight = ? WHERE run_key = ?", (marker, run_key))

    def set_mlflow_run(self, run_key: str, run_id: str, experiment_id: str) -> None:
        """Records the MLflow run a client run maps to."""
        self._conn.execute(
            "UPDATE runs SET mlflow_run_id = ?, mlflow_experiment_id = ? WHERE run_key = ?",
            (run_id, experiment_id, run_key),
        )

    def mark_create_tried(self, run_keys: Sequence[str]) -> None:
        """Records, before a create_run of their MLflow runs leaves, that one may have: after a
        crash or a lost answer the run is looked for before it is created again. Committed
        with an fsync whatever the queue's ``synchronous`` mode: a mark lost with the power
        while MLflow kept the run would give the client two runs."""
        todo = [(k,) for k in run_keys if (r := self.run(k)) is not None and not r.create_tried]
        if not todo:
            return
        conn = self._conn
        mode = conn.execute("PRAGMA synchronous").fetchone()[0]
        conn.execute("PRAGMA synchronous=FULL")  # this commit only (WAL: it syncs the log)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("UPDATE runs SET create_tried = 1 WHERE run_key = ?", todo)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute(f"PRAGMA synchronous={int(mode)}")

    def set_run_start(self, run_key: str, event: bytes) -> None:
        """Keeps the run's start (a serialized ``Event``), to create the run again elsewhere."""
        self._conn.execute("UPDATE runs SET start_event = ? WHERE run_key = ?", (event, run_key))

    def forget_mlflow_runs(self) -> int:
        """Forgets every run's MLflow ids and written count (MLflow's store was replaced);
        returns how many events the old store had been given."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT COALESCE(SUM(written_events), 0) FROM runs").fetchone()
            conn.execute(
                "UPDATE runs SET mlflow_run_id = '', mlflow_experiment_id = '',"
                " written_events = 0, inflight = ''"
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite rolls back by itself on a full disk
                conn.execute("ROLLBACK")
            raise
        return int(row[0])

    def set_status(self, run_key: str, status: str) -> None:
        """Records the status the run was ended with in MLflow."""
        self._conn.execute("UPDATE runs SET status = ? WHERE run_key = ?", (status, run_key))

    def quarantine(self, run_key: str, reason: str) -> None:
        """Holds back a run MLflow refuses for good, with the reason (and how to fix it)."""
        self._conn.execute(
            "UPDATE runs SET quarantine = ?, quarantined_ms = ?, inflight = '' WHERE run_key = ?",
            (reason, time.time_ns() // 1_000_000, run_key),
        )

    def held(self) -> list[Held]:
        """Every quarantined run, with what it holds back."""
        rows = self._conn.execute(
            f"SELECT r.run_key, r.quarantine, r.quarantined_ms, COUNT(b.id),"
            f" COALESCE(SUM({REMAINING}), 0) FROM runs r LEFT JOIN batches b"
            " ON b.run_key = r.run_key WHERE r.quarantine != '' GROUP BY r.run_key"
        ).fetchall()
        return [Held(*row) for row in rows]

    def requeued_events(self) -> int:
        """How many events replays have put back into the queue, ever."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (REQUEUED,)).fetchone()
        return int(row[0]) if row else 0

    def damaged_events(self) -> int:
        """Events lost to stored batches that failed their checksum, ever."""
        return damaged_events(self._conn)

    def dead_letters(self) -> list[tuple[str, str, str, str, str]]:
        """Every dead letter as ``(run_key, kind, key, value, reason)``."""
        rows = self._conn.execute(
            "SELECT run_key, kind, key, value, reason FROM dead_letters ORDER BY id"
        ).fetchall()
        return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


class Backlog:
    """Events stored but not yet in MLflow (held ones included); shared by the ingest and
    flush threads. Events of a quarantined run count too: what a run holds back while it waits
    for an operator is bounded by ``--max-backlog`` like everything else."""

    def __init__(self, initial: int) -> None:
        self._lock = threading.Lock()
        self._events = initial

    def add(self, count: int) -> None:
        """Counts newly stored (or replayed) events."""
        with self._lock:
            self._events += count

    def remove(self, count: int) -> None:
        """Counts events that reached MLflow (or became dead letters)."""
        with self._lock:
            self._events -= count

    @property
    def events(self) -> int:
        """The current backlog."""
        return self._events
