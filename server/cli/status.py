"""``trackbridge status``: what a receiver's queue holds, read from its data directory.

Reads ``queue.db`` directly (SQLite WAL allows it while the receiver runs), so it works for a
stopped or crashed receiver too. "In MLflow" counts only events MLflow accepted: dead letters
and the events quarantined runs hold are shown apart, and "MLflow: ok" is said only while a
running receiver reports that MLflow works.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from server.aggregate.health import all_rounds
from server.artifacts.store import format_artifacts, read_artifacts
from server.flush.mlflow_state import is_current, read_state
from server.flush.store_identity import read_identity
from server.queue.dead_letters import list_dead_letters
from server.queue.gaps import format_gaps, read_gaps
from server.queue.schema import QUEUE_FILE, QueueCorrupt, columns, open_read_only
from server.queue.sqlite import REMAINING
from server.worker_state import (
    failed_line,
    read_disk_low,
    read_failed,
    read_restarted,
    restarted_line,
)


def read_status(data_dir: Path) -> dict[str, Any]:
    """Runs, backlog and dead letters of the receiver whose data directory is ``data_dir``.

    Raises:
        FileNotFoundError: There is no queue in ``data_dir``.
        QueueCorrupt: The queue cannot be read.
    """
    path = data_dir / QUEUE_FILE
    conn = open_read_only(path)
    try:
        runs = _runs(conn)
        dead = list_dead_letters(conn)
        gaps = read_gaps(conn)
        rounds = all_rounds(conn, time.time_ns() // 1_000_000)
    except sqlite3.DatabaseError as exc:
        raise QueueCorrupt(path, exc) from None
    finally:
        conn.close()
    held = {q["run_key"]: q for q in dead["quarantined_runs"]}
    for run in runs:
        quarantined = held.get(run["run_key"])
        run["quarantine"] = quarantined["reason"] if quarantined else ""
        run["held_events"] = quarantined["events"] if quarantined else 0
    return {
        "runs": runs,
        "backlog_events": sum(r["backlog_events"] for r in runs),
        "held_events": sum(r["held_events"] for r in runs),
        "quarantined_runs": dead["quarantined_runs"],
        "dead_letters": dead["entries"],
        "mlflow": read_state(data_dir),
        "mlflow_store": read_identity(data_dir),
        "gaps": gaps,
        "rounds": {job: [r.as_json() for r in health] for job, health in rounds.items()},
        "artifacts": read_artifacts(data_dir, {r["run_key"] for r in runs if r["mlflow_run_id"]}),
        "failed_workers": read_failed(data_dir),
        "restarted_workers": read_restarted(data_dir),
        "disk_low": read_disk_low(data_dir),
    }


def _runs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    # A queue no receiver of this version has opened yet lacks the newer columns.
    written = "r.written_events" if "written_events" in columns(conn, "runs") else "r.flushed_seq"
    done = "done_seq" if "done_seq" in columns(conn, "batches") else "0"
    rows = conn.execute(
        "SELECT r.run_key, r.client_id, r.job, r.status, r.acked_seq, r.flushed_seq,"
        f" {written}, r.mlflow_run_id, COALESCE(SUM({REMAINING.replace('done_seq', done)}), 0)"
        " FROM runs r LEFT JOIN batches b ON b.run_key = r.run_key"
        " GROUP BY r.run_key ORDER BY r.job, r.client_id"
    ).fetchall()
    keys = ("run_key", "client_id", "job", "status", "acked_seq", "flushed_seq")
    return [
        {
            **dict(zip(keys, r, strict=False)),
            "in_mlflow_events": r[6],
            "mlflow_run_id": r[7],
            "backlog_events": r[8],
        }
        for r in rows
    ]


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "?"


def mlflow_line(state: dict[str, Any] | None, quarantined: int) -> str:
    """What the status says of MLflow: ok only when a running receiver says so."""
    if state is None:
        return "MLflow: unknown (the receiver has not reported yet)"
    if "mlflow" not in state.get("sinks", ["mlflow"]):
        return files_line(state)
    if not is_current(state):
        last = "ok" if state["ok"] else f"failing: {state['diagnosis']}"
        return (
            "MLflow: unknown: the receiver is not running (its last report, at"
            f" {_when(int(state.get('updated_ms', 0)))}: {last})"
        )
    if not state["ok"]:
        return f"MLflow: FAILING: {state['diagnosis']}\n  last error: {state['error']}"
    if quarantined:
        return f"MLflow: ok (reachable; {quarantined} run(s) quarantined, see below)"
    return "MLflow: ok"


def files_line(state: dict[str, Any]) -> str:
    """What the status says of a receiver that writes JSON-lines files only."""
    where = ", ".join(state["sinks"])
    if not is_current(state):
        last = "ok" if state["ok"] else f"failing: {state['error']}"
        return (
            f"MLflow: off (sinks: {where}); the receiver is not running (its last report, at"
            f" {_when(int(state.get('updated_ms', 0)))}: {last})"
        )
    if not state["ok"]:
        return f"MLflow: off (sinks: {where}); files: FAILING\n  last error: {state['error']}"
    return f"MLflow: off (sinks: {where}); files: ok"


def format_status(status: dict[str, Any]) -> str:
    """A table for people; ``--json`` prints the dict instead."""
    lines = [
        f"{'job':<20} {'client':<16} {'status':<11} {'acked':>8} {'in MLflow':>9} "
        f"{'backlog':>8}  MLflow run"
    ]
    for r in status["runs"]:
        state = "QUARANTINE" if r["quarantine"] else r["status"]
        lines.append(
            f"{r['job'][:20]:<20} {r['client_id'][:16]:<16} {state:<11} "
            f"{r['acked_seq']:>8} {r['in_mlflow_events']:>9} {r['backlog_events']:>8}  "
            f"{r['mlflow_run_id'] or '(not created yet)'}"
        )
    held = status["held_events"]
    lines.append(
        f"backlog not yet in MLflow: {status['backlog_events']} events"
        + (f" ({held} held by quarantined runs)" if held else "")
    )
    store = status.get("mlflow_store")
    if store:
        lines.append(f"MLflow store: {store['tracking_uri']} (since {_when(store['since_ms'])})")
        previous = store.get("previous")
        if previous:
            lines.append(
                f"  replaced at {_when(previous.get('until_ms', 0))}: {previous['tracking_uri']};"
                f" the {previous.get('events_written', '?')} events written there stay there"
            )
    lines.append(mlflow_line(status.get("mlflow"), len(status["quarantined_runs"])))
    if failed := failed_line(status.get("failed_workers", {})):
        lines.append(failed)
    if restarted := restarted_line(status.get("restarted_workers", {})):
        lines.append(restarted)
    if status.get("disk_low"):
        lines.append(f"disk: LOW: {status['disk_low']}")
    sinks = (status.get("mlflow") or {}).get("sinks", ["mlflow"])
    if len(sinks) > 1:
        lines.append(f"sinks: {', '.join(sinks)} (a batch leaves the queue once all have it)")
    quarantined = status["quarantined_runs"]
    if quarantined:
        lines.append(f"quarantined runs: {len(quarantined)}")
        for q in quarantined:
            lines.append(
                f"  run {q['run_key']} (job {q['job']}, client {q['client_id']}):"
                f" {q['events']} events held since {_when(q['since_ms'])}: {q['reason']}"
            )
    dead = status["dead_letters"]
    lines.append(f"dead letters: {len(dead)}")
    lines.extend(f"  run {d['run_key']} {d['kind']} {d['key']!r}: {d['reason']}" for d in dead)
    for job, health in status.get("rounds", {}).items():
        lines.append(f"rounds of job {job} (latest first):")
        lines.extend(f"  {r['line']}" for r in health)
    lines.extend(format_gaps(status.get("gaps", [])))
    lines.extend(format_artifacts(status.get("artifacts", {"waiting": [], "failed": []})))
    return "\n".join(lines)


def print_status(data_dir: Path, as_json: bool) -> int:
    """Prints the status; exit code 2 when runs are quarantined, there are dead letters, a
    worker failed, the data directory is past its reserve (or the queue cannot be read), 0
    otherwise."""
    try:
        status = read_status(data_dir)
    except (FileNotFoundError, QueueCorrupt) as exc:
        print(f"trackbridge status: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(status, indent=2) if as_json else format_status(status))
    trouble = (
        status["dead_letters"]
        or status["quarantined_runs"]
        or status["failed_workers"]
        or status["disk_low"]
    )
    return 2 if trouble else 0
