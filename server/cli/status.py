"""``trackbridge status``: what a receiver's queue holds, read from its data directory.

Reads ``queue.db`` directly (SQLite WAL allows it while the receiver runs), so it works for a
stopped or crashed receiver too.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from server.artifacts.store import format_artifacts, read_artifacts
from server.flush.mlflow_state import read_state
from server.queue.gaps import format_gaps, read_gaps


def read_status(data_dir: Path) -> dict[str, Any]:
    """Runs, backlog and dead letters of the receiver whose data directory is ``data_dir``."""
    path = data_dir / "queue.db"
    if not path.exists():
        raise FileNotFoundError(f"no receiver queue at {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        runs = conn.execute(
            "SELECT r.run_key, r.client_id, r.job, r.status, r.acked_seq, r.flushed_seq,"
            " r.mlflow_run_id, COALESCE(SUM(b.last_seq - b.first_seq + 1), 0)"
            " FROM runs r LEFT JOIN batches b ON b.run_key = r.run_key"
            " GROUP BY r.run_key ORDER BY r.job, r.client_id"
        ).fetchall()
        dead = conn.execute(
            "SELECT run_key, kind, key, reason, at_ms FROM dead_letters ORDER BY id"
        ).fetchall()
        gaps = read_gaps(conn)
    finally:
        conn.close()
    return {
        "runs": [
            {
                "run_key": r[0],
                "client_id": r[1],
                "job": r[2],
                "status": r[3],
                "acked_seq": r[4],
                "flushed_seq": r[5],
                "mlflow_run_id": r[6],
                "backlog_events": r[7],
            }
            for r in runs
        ],
        "backlog_events": sum(r[7] for r in runs),
        "dead_letters": [
            {"run_key": d[0], "kind": d[1], "key": d[2], "reason": d[3], "at_ms": d[4]}
            for d in dead
        ],
        "mlflow": read_state(data_dir),
        "gaps": gaps,
        "artifacts": read_artifacts(data_dir, {r[0] for r in runs if r[6]}),
    }


def format_status(status: dict[str, Any]) -> str:
    """A table for people; ``--json`` prints the dict instead."""
    lines = [
        f"{'job':<20} {'client':<16} {'status':<9} {'acked':>8} {'in MLflow':>9} "
        f"{'backlog':>8}  MLflow run"
    ]
    for r in status["runs"]:
        lines.append(
            f"{r['job'][:20]:<20} {r['client_id'][:16]:<16} {r['status']:<9} "
            f"{r['acked_seq']:>8} {r['flushed_seq']:>9} {r['backlog_events']:>8}  "
            f"{r['mlflow_run_id'] or '(not created yet)'}"
        )
    lines.append(f"backlog not yet in MLflow: {status['backlog_events']} events")
    mlflow = status.get("mlflow")
    if mlflow and not mlflow["ok"]:
        lines.append(f"MLflow: FAILING: {mlflow['diagnosis']}\n  last error: {mlflow['error']}")
    elif mlflow:
        lines.append("MLflow: ok")
    dead = status["dead_letters"]
    lines.append(f"dead letters: {len(dead)}")
    lines.extend(f"  run {d['run_key']} {d['kind']} {d['key']!r}: {d['reason']}" for d in dead)
    lines.extend(format_gaps(status.get("gaps", [])))
    lines.extend(format_artifacts(status.get("artifacts", {"waiting": [], "failed": []})))
    return "\n".join(lines)


def print_status(data_dir: Path, as_json: bool) -> int:
    """Prints the status; exit code 2 when there are dead letters, 0 otherwise."""
    status = read_status(data_dir)
    print(json.dumps(status, indent=2) if as_json else format_status(status))
    return 2 if status["dead_letters"] else 0
