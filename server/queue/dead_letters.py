"""Dead letters and quarantined runs: listing them, and putting them back in the queue.

Two kinds of dead letter, both kept with MLflow's reason and with what is needed to write them
again:

- an *entry* MLflow refused while the rest of its run went on (a param another writer set to
  another value): a row of ``dead_letters`` holding the event as a one-event batch;
- a *quarantined run* (its run or experiment was deleted in MLflow, MLflow refuses to create
  it): one reason on the run, and its stored batches held in ``batches`` as they were, new
  ones joining them as they arrive. Nothing of it is rewritten while it waits.

:func:`replay` releases them in one transaction, in their original order, whether the receiver
is running (its flusher picks them up at its next tick) or stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.queue.checksum import checksum
from server.queue.schema import columns
from server.queue.sqlite import REMAINING, REQUEUED


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay put back."""

    runs: tuple[str, ...]
    """Quarantined runs released."""
    held_events: int
    """Events those runs held, now flowing again."""
    entries: int
    """Single refused entries put back in the queue."""


def list_dead_letters(conn: sqlite3.Connection) -> dict[str, Any]:
    """Quarantined runs (reason, held events) and refused entries, for people and ``--json``."""
    run_cols = columns(conn, "runs")
    quarantined: list[dict[str, Any]] = []
    if "quarantine" in run_cols:
        done = "done_seq" if "done_seq" in columns(conn, "batches") else "0"
        remaining = REMAINING.replace("done_seq", done)
        rows = conn.execute(
            f"SELECT r.run_key, r.job, r.client_id, r.quarantine, r.quarantined_ms,"
            f" COUNT(b.id), COALESCE(SUM({remaining}), 0), r.mlflow_run_id FROM runs r"
            " LEFT JOIN batches b ON b.run_key = r.run_key WHERE r.quarantine != ''"
            " GROUP BY r.run_key ORDER BY r.quarantined_ms, r.run_key"
        ).fetchall()
        keys = ("run_key", "job", "client_id", "reason", "since_ms", "batches", "events")
        quarantined = [
            {**dict(zip(keys, row, strict=False)), "mlflow_run_id": row[7]} for row in rows
        ]
    replayable = "payload IS NOT NULL" if "payload" in columns(conn, "dead_letters") else "0"
    entries = conn.execute(
        "SELECT d.run_key, r.job, r.client_id, d.kind, d.key, d.value, d.reason, d.at_ms,"
        f" {replayable} FROM dead_letters d LEFT JOIN runs r ON r.run_key = d.run_key"
        " ORDER BY d.id"
    ).fetchall()
    names = ("run_key", "job", "client_id", "kind", "key", "value", "reason", "at_ms")
    return {
        "quarantined_runs": quarantined,
        "entries": [
            {**dict(zip(names, row, strict=False)), "replayable": bool(row[8])} for row in entries
        ],
    }


def replay(
    conn: sqlite3.Connection,
    *,
    run_keys: Sequence[str] = (),
    reason: str = "",
    everything: bool = False,
    new_run: bool = False,
) -> Replayed:
    """Puts dead letters back in the queue: those of ``run_keys``, those whose reason contains
    ``reason``, or ``everything``. A released run's held batches and its replayed entries are
    queued in sequence order, ahead of anything it sent since; entries of a run that flows go
    after what it has queued. ``new_run`` also forgets the released runs' MLflow run ids, so
    that they are found again by their tags, or created anew (a run purged from MLflow)."""
    where, args = _selector(run_keys, reason, everything)
    conn.execute("BEGIN IMMEDIATE")
    try:
        quarantined = where.format(r="quarantine")
        released = [
            row[0]
            for row in conn.execute(
                f"SELECT run_key FROM runs WHERE quarantine != '' AND ({quarantined})", args
            )
        ]
        entries = conn.execute(
            "SELECT id, run_key, seq, payload FROM dead_letters WHERE payload IS NOT NULL"
            f" AND ({where.format(r='reason')}) ORDER BY run_key, seq, id",
            args,
        ).fetchall()
        held = 0
        for run_key in released:
            held += _requeue_in_order(conn, run_key, [e for e in entries if e[1] == run_key])
            clear = ", mlflow_run_id = '', mlflow_experiment_id = ''" if new_run else ""
            conn.execute(
                f"UPDATE runs SET quarantine = '', quarantined_ms = 0{clear} WHERE run_key = ?",
                (run_key,),
            )
        for _id, run_key, seq, payload in entries:
            if run_key not in released:
                conn.execute(
                    "INSERT INTO batches (run_key, first_seq, last_seq, payload, crc)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (run_key, seq, seq, payload, checksum(payload)),
                )
        conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(e[0],) for e in entries])
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            (REQUEUED, len(entries)),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return Replayed(tuple(released), held, len(entries))


def _selector(run_keys: Sequence[str], reason: str, everything: bool) -> tuple[str, list[str]]:
    """A WHERE clause (``{r}`` stands for the reason column) and its arguments."""
    if everything:
        return "1", []
    clauses, args = [], []
    if run_keys:
        clauses.append(f"run_key IN ({', '.join('?' * len(run_keys))})")
        args += list(run_keys)
    if reason:
        clauses.append("instr({r}, ?) > 0")
        args.append(reason)
    if not clauses:
        raise ValueError("name what to replay: run keys, a reason, or everything")
    return " OR ".join(clauses), args


def _requeue_in_order(
    conn: sqlite3.Connection, run_key: str, entries: list[tuple[int, str, int, bytes]]
) -> int:
    """Queues a released run's held batches and replayed entries again, by sequence number.

    The flusher never reads a quarantined run's batches, so rewriting their order here cannot
    race with it. Returns the events the run held.
    """
    held = conn.execute(
        "SELECT id, first_seq, last_seq, payload, done_seq, experiment, experiment_id, crc"
        " FROM batches WHERE run_key = ? ORDER BY id",
        (run_key,),
    ).fetchall()
    rows = [row[1:] for row in held]  # each keeps its checksum: damage stays detectable
    rows += [(seq, seq, payload, 0, "", "", checksum(payload)) for _i, _r, seq, payload in entries]
    rows.sort(key=lambda r: r[0])
    conn.executemany("DELETE FROM batches WHERE id = ?", [(h[0],) for h in held])
    conn.executemany(
        "INSERT INTO batches (run_key, first_seq, last_seq, payload, done_seq, experiment,"
        " experiment_id, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(run_key, *r) for r in rows],
    )
    return sum(h[2] - max(h[1] - 1, h[4]) for h in held)
