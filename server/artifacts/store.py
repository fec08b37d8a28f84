"""Staged artifact files: what clients uploaded and the receiver has yet to put in MLflow.

Each verified file sits in ``<data_dir>/artifact-staging/<upload_id>/<file name>`` and has a
row in ``<data_dir>/artifacts.db`` (SQLite, WAL). The file is fsynced before its row commits,
and the client is acknowledged only after the commit: an acknowledged file survives a killed
receiver and a power loss. The uploader deletes both once MLflow has the file, and keeps a row
in ``delivered`` (for ``DELIVERED_KEEP_DAYS``): an upload sent again (a client that died before
it saw the acknowledgement) is recognised by its upload id, or by its run, path and SHA-256, and
acknowledged without being stored or uploaded twice.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGING_DIR = "artifact-staging"
DELIVERED_KEEP_DAYS = 30
"""How long a delivered upload is remembered (a resend after that is uploaded again: the same
bytes to the same path)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY,
    upload_id TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL,
    job TEXT NOT NULL,
    run_key TEXT NOT NULL,
    artifact_path TEXT NOT NULL,
    file_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL DEFAULT '',
    retry_reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS delivered (
    upload_id TEXT PRIMARY KEY,
    run_key TEXT NOT NULL,
    artifact_path TEXT NOT NULL,
    file_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    model_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS delivered_by_content ON delivered (run_key, file_name, sha256);
CREATE TABLE IF NOT EXISTS failed_uploads (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL,
    artifact_path TEXT NOT NULL,
    file_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StagedFile:
    """One verified file waiting for its run to exist in MLflow."""

    upload_id: str
    client_id: str
    job: str
    run_key: str
    artifact_path: str
    """Directory inside the run's artifacts; "" is the root."""
    file_name: str
    size: int
    sha256: str
    model_id: str = ""
    """The MLflow logged model the file belongs to ("" : the run's artifacts)."""


class ArtifactStore:
    """The staging directory and its table; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self.staging = data_dir / STAGING_DIR
        self.staging.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            data_dir / "artifacts.db", timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        cutoff = time.time_ns() // 1_000_000 - DELIVERED_KEEP_DAYS * 86_400_000
        self._conn.execute("DELETE FROM delivered WHERE at_ms < ?", (cutoff,))
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(uploads)")}
        if "model_id" not in columns:  # a data directory from before logged models
            self._conn.execute("ALTER TABLE uploads ADD COLUMN model_id TEXT NOT NULL DEFAULT ''")
        if "retry_reason" not in columns:  # from before files were set aside
            self._conn.execute(
                "ALTER TABLE uploads ADD COLUMN retry_reason TEXT NOT NULL DEFAULT ''"
            )
        self._staged_bytes = self._sum_sizes()
        self._retried: frozenset[str] = frozenset()
        """The run key and logged model id of the file whose upload failed and is retried
        within its window now (the uploader's thread sets it; reads skip them)."""
        self._drop_strays()

    def _sum_sizes(self) -> int:
        row = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM uploads").fetchone()
        return int(row[0])

    def _drop_strays(self) -> None:
        # Directories of uploads that never completed (the receiver died mid-stream).
        known = {row[0] for row in self._conn.execute("SELECT upload_id FROM uploads")}
        for entry in self.staging.iterdir():
            if entry.name not in known:
                shutil.rmtree(entry, ignore_errors=True)

    def directory(self, upload_id: str) -> Path:
        """Where an upload's file is staged."""
        return self.staging / upload_id

    def path(self, staged: StagedFile) -> Path:
        """The staged file itself."""
        return self.directory(staged.upload_id) / staged.file_name

    @property
    def staged_bytes(self) -> int:
        """Bytes staged and recorded, not yet in MLflow."""
        return self._staged_bytes

    def has(
        self,
        upload_id: str,
        run_key: str = "",
        path: tuple[str, str] = ("", ""),
        sha256: str = "",
        model_id: str = "",
    ) -> bool:
        """Whether this upload is already staged or delivered (a client resending after a lost
        ack): by its upload id, or, when ``sha256`` is given, by run, logged model (two models
        of one run often hold identical files), ``(artifact_path, file_name)`` and content."""
        by_content = (run_key, model_id, *path, sha256)
        with self._lock:
            for table in ("uploads", "delivered"):
                row = self._conn.execute(
                    f"SELECT 1 FROM {table} WHERE upload_id = ? OR (? != '' AND run_key = ? AND"
                    " model_id = ? AND artifact_path = ? AND file_name = ? AND sha256 = ?)",
                    (upload_id, sha256, *by_content),
                ).fetchone()
                if row is not None:
                    return True
        return False

    def add(self, staged: StagedFile) -> None:
        """Records a verified, fsynced file."""
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO uploads (upload_id, client_id, job, run_key, artifact_path,"
                " file_name, size, sha256, model_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    staged.upload_id,
                    staged.client_id,
                    staged.job,
                    staged.run_key,
                    staged.artifact_path,
                    staged.file_name,
                    staged.size,
                    staged.sha256,
                    staged.model_id,
                ),
            )
            self._staged_bytes += staged.size

    def pending(self, limit: int = 256) -> list[StagedFile]:
        """The oldest staged files, in the order they arrived."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT upload_id, client_id, job, run_key, artifact_path, file_name, size,"
                " sha256, model_id FROM uploads ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [StagedFile(*row) for row in rows]

    def retrying(self, staged: StagedFile | None) -> None:
        """Notes the file whose upload failed and is being retried within its window (None:
        none is): a read does not wait for its run's (or logged model's) files meanwhile."""
        keys = frozenset() if staged is None else frozenset({staged.run_key, staged.model_id})
        with self._lock:
            self._retried = keys - {""}

    def pending_for(self, run_keys: set[str]) -> bool:
        """Whether files of these runs (or logged models, by id) are still staged, on their
        way (a file being retried after a failure, or set aside after its retry window, is
        not, nor are its run's files behind it: a read does not wait for them)."""
        with self._lock:
            keys = tuple(run_keys - self._retried)
        if not keys:
            return False
        marks = ",".join("?" * len(keys))
        with self._lock:
            row = self._conn.execute(
                f"SELECT 1 FROM uploads WHERE (run_key IN ({marks}) OR model_id IN ({marks}))"
                " AND retry_reason = '' LIMIT 1",
                keys + keys,
            ).fetchone()
        return row is not None

    def remove(self, staged: StagedFile, *, delivered: bool = False) -> None:
        """Forgets a file MLflow has (``delivered``: remembered, see the module docstring) or
        refused for good, and deletes it from disk."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM uploads WHERE upload_id = ?", (staged.upload_id,))
                if delivered:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO delivered (upload_id, run_key, artifact_path,"
                        " file_name, sha256, at_ms, model_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (staged.upload_id, staged.run_key, staged.artifact_path, staged.file_name,
                         staged.sha256, time.time_ns() // 1_000_000, staged.model_id),
                    )  # fmt: skip
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._staged_bytes -= staged.size
        shutil.rmtree(self.directory(staged.upload_id), ignore_errors=True)

    def set_aside(self, staged: StagedFile, reason: str) -> None:
        """Records why a file missed its retry window (shown by ``trackbridge status``)."""
        with self._lock:
            self._conn.execute(
                "UPDATE uploads SET retry_reason = ? WHERE upload_id = ?",
                (reason[:2000], staged.upload_id),
            )

    def fail(self, staged: StagedFile, reason: str) -> None:
        """Keeps the reason MLflow refused a file for good, then removes the file."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO failed_uploads (run_key, artifact_path, file_name, reason, at_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    staged.run_key,
                    staged.artifact_path,
                    staged.file_name,
                    reason,
                    time.time_ns() // 1_000_000,
                ),
            )
        self.remove(staged)

    def failures(self) -> list[tuple[str, str, str, str]]:
        """Files refused for good, as ``(run_key, artifact_path, file_name, reason)``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT run_key, artifact_path, file_name, reason FROM failed_uploads ORDER BY id"
            ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def count(self) -> int:
        """Files staged, not yet in MLflow."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM uploads").fetchone()[0])

    def close(self) -> None:
        """Closes the database."""
        with self._lock:
            self._conn.close()


def read_artifacts(data_dir: Path, runs_in_mlflow: set[str]) -> dict[str, Any]:
    """For ``trackbridge status``: staged files (waiting for their run, or for their turn) and
    uploads that failed; empty lists when the receiver has had no artifact yet."""
    path = data_dir / "artifacts.db"
    out: dict[str, Any] = {"waiting": [], "failed": []}
    if not path.exists():
        return out
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(uploads)")}
        reason = "retry_reason" if "retry_reason" in columns else "''"
        waiting = conn.execute(
            "SELECT run_key, client_id, artifact_path, file_name, size,"
            f" {reason} FROM uploads ORDER BY id"
        ).fetchall()
        failed = conn.execute(
            "SELECT run_key, artifact_path, file_name, reason, at_ms FROM failed_uploads"
            " ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError:
        return out
    finally:
        conn.close()
    out["waiting"] = [
        {"run_key": r[0], "client_id": r[1], "path": _joined(r[2], r[3]), "size": r[4],
         "run_in_mlflow": r[0] in runs_in_mlflow, "retrying": r[5]}
        for r in waiting
    ]  # fmt: skip
    out["failed"] = [
        {"run_key": r[0], "path": _joined(r[1], r[2]), "reason": r[3], "at_ms": r[4]}
        for r in failed
    ]
    return out


def format_artifacts(artifacts: dict[str, Any]) -> list[str]:
    """Lines for ``trackbridge status``."""
    waiting, failed = artifacts["waiting"], artifacts["failed"]
    if not waiting and not failed:
        return []
    no_run = sum(1 for w in waiting if not w["run_in_mlflow"])
    lines = [f"artifacts not yet in MLflow: {len(waiting)} ({no_run} waiting for their run)"]
    lines.extend(
        f"  run {w['run_key']} {w['path']} ({w['size']} bytes)"
        + ("" if w["run_in_mlflow"] else ": waiting for its run")
        + (
            f": past its retry window, retried on its own: {w['retrying']}"
            if w.get("retrying")
            else ""
        )
        for w in waiting
    )
    lines.append(f"artifact uploads failed: {len(failed)}")
    lines.extend(f"  run {f['run_key']} {f['path']}: {f['reason']}" for f in failed)
    return lines


def _joined(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name
