"""Helpers for tests of client spools: leave one behind, damage it, run ``trackbridge sync``."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.faults import TcpProxy, spooled_events
from tests.support.procs import TRACKBRIDGE_EXE, wait_until

WAL_HEADER_BYTES = 32
WAL_FRAME_BYTES = 24 + 4096
"""A WAL frame: its header and one page (SQLite's default page size)."""


def spool_then_kill(
    start_client: Callable[..., subprocess.Popen[bytes]],
    proxy: TcpProxy,
    client_id: str,
    job: str,
    spool: Path,
    out: Path,
    *,
    points: int,
    rate: float = 0,
) -> None:
    """A client logs ``points`` behind a cut network (all in its spool), then is SIGKILLed.

    The spool is written for ``proxy.address``; restore the proxy to reach the receiver.
    """
    proxy.cut()
    before = spooled_events(spool)
    proc = start_client(proxy.address, client_id, job, spool, out, points=points, rate=rate,
                        extra=("--hold",))  # fmt: skip
    # The points plus the run start.
    wait_until(lambda: spooled_events(spool) == before + points + 1, 90, what="the spool")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def spool_of(directory: Path, client_id: str) -> Path:
    """The one spool database of ``client_id`` in ``directory``."""
    found = list(directory.glob(f"{client_id}-*.spool.db"))
    assert len(found) == 1, found
    return found[0]


def tear_wal(db: Path, how: str) -> None:
    """Damages the WAL as a torn write would, about halfway: ``truncate`` cuts it in the middle
    of a frame, ``garble`` overwrites bytes inside a frame."""
    wal = Path(f"{db}-wal")
    frames = (wal.stat().st_size - WAL_HEADER_BYTES) // WAL_FRAME_BYTES
    assert frames > 4, f"the WAL holds {frames} frames"
    at = WAL_HEADER_BYTES + WAL_FRAME_BYTES * (frames // 2)
    if how == "truncate":
        os.truncate(wal, at + WAL_FRAME_BYTES // 3)
    else:
        with wal.open("r+b") as f:
            f.seek(at + 100)
            f.write(os.urandom(256))


def truncate_main_file(db: Path) -> None:
    """Moves everything into the main file (a checkpoint, as a long-running writer's would),
    then cuts the main file to half its size."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    size = db.stat().st_size
    assert size > 64 * 1024, f"the spool holds only {size} bytes"
    os.truncate(db, size // 2)


def sync(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """Runs ``trackbridge sync ARGS``."""
    return subprocess.run(
        [str(TRACKBRIDGE_EXE), "sync", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def modes(directory: Path) -> dict[str, str]:
    """Permission bits of everything under ``directory`` (relative path -> ``0o600``)."""
    return {
        str(p.relative_to(directory)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in sorted(directory.rglob("*"))
    }


def status(data_dir: Path) -> str:
    """``trackbridge status`` of a receiver's data directory."""
    done = subprocess.run(
        [str(TRACKBRIDGE_EXE), "status", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


def run_of(client: Any, job: str, client_id: str) -> Any:
    """The MLflow run of ``client_id`` in ``job`` (None until there is exactly one)."""
    from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs

    runs = [
        r for r in child_runs(job_runs(client, job)) if r.data.tags.get(TAG_CLIENT_ID) == client_id
    ]
    return runs[0] if len(runs) == 1 else None
