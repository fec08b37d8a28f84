"""Is ``queue.db`` whole, and if not, how to get back what it holds (never by deleting it).

The receiver refuses to start on a damaged queue (it holds events the clients have already
deleted from their spools), ``trackbridge status`` says so, and ``trackbridge doctor`` runs
SQLite's full check and prints the steps below.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from server.queue.schema import QUEUE_FILE


def problem(data_dir: Path) -> str | None:
    """What is wrong with the queue (SQLite's ``integrity_check``); None when it is whole or
    there is none yet."""
    path = data_dir / QUEUE_FILE
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    found = [str(row[0]) for row in rows if row[0] != "ok"]
    return "; ".join(found[:5]) or None


def recovery_steps(data_dir: Path) -> list[str]:
    """How to salvage a damaged queue, step by step, keeping the damaged file."""
    path = data_dir / QUEUE_FILE
    kept = path.with_name(f"{QUEUE_FILE}.damaged")
    return [
        "stop the receiver (it will not start on a damaged queue)",
        f"keep the damaged file: mv {path} {kept} (and its -wal and -shm files, if any, to"
        f" {kept}-wal and {kept}-shm)",
        f'salvage what it holds: sqlite3 {kept} ".recover" | sqlite3 {path} (the sqlite3'
        " command-line tool, 3.29 or later)",
        "start the receiver: it writes what was salvaged to MLflow; `trackbridge status` lists"
        " it. What was acknowledged to clients but not salvaged is lost (clients delete what"
        " the receiver acknowledges), so keep the damaged file until you are sure",
    ]
