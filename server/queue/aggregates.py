"""The cross-client aggregates' durable state, in the queue database beside the batches.

Four tables: ``agg_points`` holds each client's latest value (and weight) per group (a job,
a metric key, and a round, or a step when the points carry no round) until the group's
aggregate is written; ``agg_groups`` when a group was first heard of and how many points it
took (``version``), and the version its aggregate covered once written (``written_version``,
0 before); ``agg_arrivals`` when each client's first point of a group came and whether it came
after the aggregate was written (late: recorded there, never written); ``agg_runs`` which
client runs of a job have started and not ended (the clients an aggregate waits for).

Points are recorded in the ingest transaction that stores their batch (:func:`record`), and an
aggregate is queued as a batch of the job's aggregate run in the transaction that marks its
group written (:meth:`queue_written`), so a receiver killed at any moment neither loses an
input nor writes an aggregate twice: the flusher then writes that batch once, like any other.
SQLite stores NaN as NULL; a NULL value reads back as NaN.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from server.queue.checksum import checksum

SCHEMA = """
CREATE TABLE IF NOT EXISTS agg_points (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    by_round INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    value REAL,
    num_examples INTEGER NOT NULL,
    PRIMARY KEY (job, key, by_round, slot, client_id)
);
CREATE TABLE IF NOT EXISTS agg_groups (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    by_round INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    version INTEGER NOT NULL,
    written_version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, key, by_round, slot)
);
CREATE INDEX IF NOT EXISTS agg_groups_due ON agg_groups (written_version, version);
CREATE TABLE IF NOT EXISTS agg_arrivals (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    by_round INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    arrived_ms INTEGER NOT NULL,
    late INTEGER NOT NULL,
    value REAL,
    num_examples INTEGER NOT NULL,
    PRIMARY KEY (job, key, by_round, slot, client_id)
);
CREATE TABLE IF NOT EXISTS agg_runs (
    run_key TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    client_id TEXT NOT NULL,
    open INTEGER NOT NULL
);
"""

RUN_KEY_PREFIX = "/aggregates:"
"""Owned run keys of aggregate runs: ``/aggregates:<job>``. No client has them: a client's
owned key starts with its client id, which is never empty."""


def aggregate_run_key(job: str) -> str:
    """The owned run key under which a job's aggregates are queued."""
    return f"{RUN_KEY_PREFIX}{job}"


def is_aggregate_run(run_key: str) -> bool:
    """Whether an owned run key is a job's aggregate run (written to the job's parent run)."""
    return run_key.startswith(RUN_KEY_PREFIX)


AGGREGATE_STATUS = "AGGREGATES"
"""The queue status of an aggregate run: never RUNNING, so no lease ever ends it."""


@dataclass(frozen=True, slots=True)
class Group:
    """A group whose latest points are not all covered by a written aggregate."""

    job: str
    key: str
    by_round: bool
    slot: int
    """The round (``by_round``) or the step."""
    first_ms: int
    version: int
    written_version: int


@dataclass(frozen=True, slots=True)
class Observed:
    """What one ingest transaction brings: points ``(job, key, by_round, slot, client_id,
    value, num_examples)``, and runs opened and ended ``(run_key, job, client_id)``."""

    points: list[tuple[str, str, int, int, str, float, int]]
    opened: list[tuple[str, str, str]]
    ended: list[str]

    def __bool__(self) -> bool:
        return bool(self.points or self.opened or self.ended)


def create(conn: sqlite3.Connection) -> None:
    """Creates the tables (idempotent; an older queue simply gains them)."""
    conn.executescript(SCHEMA)


def record(conn: sqlite3.Connection, seen: Observed, now_ms: int) -> None:
    """Records what a batch brought; call inside the transaction that stores the batch."""
    conn.executemany(
        "INSERT INTO agg_runs (run_key, job, client_id, open) VALUES (?, ?, ?, 1)"
        " ON CONFLICT (run_key) DO UPDATE SET open = 1",
        seen.opened,
    )
    conn.executemany("UPDATE agg_runs SET open = 0 WHERE run_key = ?", [(k,) for k in seen.ended])
    # A group's aggregate is written once: a point that comes after it (a late client) is
    # recorded as an arrival, late, and changes neither the group's inputs nor its version.
    conn.executemany(
        "INSERT INTO agg_arrivals (job, key, by_round, slot, client_id, arrived_ms, late, value,"
        " num_examples) SELECT ?1, ?2, ?3, ?4, ?5, ?8, EXISTS (SELECT 1 FROM agg_groups g"
        " WHERE g.job = ?1 AND g.key = ?2 AND g.by_round = ?3 AND g.slot = ?4"
        " AND g.written_version > 0), ?6, ?7 WHERE true"
        " ON CONFLICT (job, key, by_round, slot, client_id) DO NOTHING",
        [(*p, now_ms) for p in seen.points],
    )
    conn.executemany(
        "INSERT INTO agg_points (job, key, by_round, slot, client_id, value, num_examples)"
        " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE NOT EXISTS (SELECT 1 FROM agg_groups g"
        " WHERE g.job = ?1 AND g.key = ?2 AND g.by_round = ?3 AND g.slot = ?4"
        " AND g.written_version > 0)"
        " ON CONFLICT (job, key, by_round, slot, client_id)"
        " DO UPDATE SET value = excluded.value, num_examples = excluded.num_examples",
        seen.points,
    )
    conn.executemany(
        "INSERT INTO agg_groups (job, key, by_round, slot, first_ms, version)"
        " VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (job, key, by_round, slot)"
        " DO UPDATE SET version = version + 1 WHERE written_version = 0",
        [(p[0], p[1], p[2], p[3], now_ms) for p in seen.points],
    )


def due(conn: sqlite3.Connection) -> list[Group]:
    """Groups whose aggregate is not written yet, oldest first."""
    rows = conn.execute(
        "SELECT job, key, by_round, slot, first_ms, version, written_version FROM agg_groups"
        " WHERE written_version = 0 ORDER BY first_ms, job, key, slot"
    ).fetchall()
    return [Group(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6]) for r in rows]


def points(conn: sqlite3.Connection, group: Group) -> list[tuple[str, float, int]]:
    """The group's latest point per client: ``(client_id, value, num_examples)`` by client."""
    rows = conn.execute(
        "SELECT client_id, value, num_examples FROM agg_points WHERE job = ? AND key = ?"
        " AND by_round = ? AND slot = ? ORDER BY client_id",
        (group.job, group.key, int(group.by_round), group.slot),
    ).fetchall()
    return [(r[0], math.nan if r[1] is None else float(r[1]), int(r[2])) for r in rows]


def open_clients(conn: sqlite3.Connection, job: str) -> set[str]:
    """Clients of ``job`` with a run that has started and not ended: neither by its client
    (a run end stored) nor by the receiver (its lease ran out: the flusher's status)."""
    rows = conn.execute(
        "SELECT DISTINCT a.client_id FROM agg_runs a LEFT JOIN runs r ON r.run_key = a.run_key"
        " WHERE a.job = ? AND a.open = 1 AND COALESCE(r.status, 'RUNNING') = 'RUNNING'",
        (job,),
    ).fetchall()
    return {r[0] for r in rows}


def earlier_reporters(conn: sqlite3.Connection, group: Group) -> set[str]:
    """Clients that took part in an aggregate of ``group``'s key written before (another
    round or step of the same job and key)."""
    rows = conn.execute(
        "SELECT DISTINCT p.client_id FROM agg_points p JOIN agg_groups g"
        " ON g.job = p.job AND g.key = p.key AND g.by_round = p.by_round AND g.slot = p.slot"
        " WHERE p.job = ? AND p.key = ? AND p.by_round = ? AND p.slot <> ?"
        " AND g.written_version > 0",
        (group.job, group.key, int(group.by_round), group.slot),
    ).fetchall()
    return {r[0] for r in rows}


def failed_clients(conn: sqlite3.Connection, job: str) -> set[str]:
    """Clients of ``job`` with no run open and a run that failed or was killed (its lease ran
    out): gone, not waited for."""
    rows = conn.execute(
        "SELECT DISTINCT a.client_id FROM agg_runs a JOIN runs r ON r.run_key = a.run_key"
        " WHERE a.job = ? AND r.status IN ('FAILED', 'KILLED') AND NOT EXISTS (SELECT 1"
        " FROM agg_runs o LEFT JOIN runs q ON q.run_key = o.run_key WHERE o.job = a.job"
        " AND o.client_id = a.client_id AND o.open = 1"
        " AND COALESCE(q.status, 'RUNNING') = 'RUNNING')",
        (job,),
    ).fetchall()
    return {r[0] for r in rows}


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction (``BEGIN IMMEDIATE``): what is read inside it stays true."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def next_seq(conn: sqlite3.Connection, run_key: str) -> int:
    """The next sequence number of the aggregate run ``run_key``."""
    row = conn.execute("SELECT acked_seq FROM runs WHERE run_key = ?", (run_key,)).fetchone()
    return (int(row[0]) if row else 0) + 1


def store_batch(
    conn: sqlite3.Connection, run_key: str, *, job: str, first: int, last: int, payload: bytes
) -> None:
    """Queues a batch of the aggregate run of ``job`` (inside :func:`transaction`)."""
    conn.execute(
        "INSERT INTO runs (run_key, client_id, job, acked_seq, status) VALUES (?, '', ?, ?, ?)"
        " ON CONFLICT (run_key) DO UPDATE SET acked_seq = excluded.acked_seq",
        (run_key, job, last, AGGREGATE_STATUS),
    )
    conn.execute(
        "INSERT INTO batches (run_key, first_seq, last_seq, payload, crc) VALUES (?, ?, ?, ?, ?)",
        (run_key, first, last, payload, checksum(payload)),
    )


def mark_written(conn: sqlite3.Connection, group: Group) -> None:
    """Records that an aggregate covering the group's points up to its version is queued."""
    conn.execute(
        "UPDATE agg_groups SET written_version = ? WHERE job = ? AND key = ? AND by_round = ?"
        " AND slot = ?",
        (group.version, group.job, group.key, int(group.by_round), group.slot),
    )
