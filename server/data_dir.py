"""One receiver per data directory, and the id that directory gives it across restarts.

Two receivers on one queue would flush the same batches twice, so a receiver holds an exclusive
lock on ``<data dir>/receiver.lock`` while it runs (the kernel lets go when the process dies,
however it dies). The id in ``<data dir>/receiver-id`` names the receiver in what it leaves in
MLflow (server/flush/run_creation.py), so that a restarted receiver recognises its own.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from pathlib import Path

LOCK_FILE = "receiver.lock"
ID_FILE = "receiver-id"


class DataDirInUse(RuntimeError):
    """Another running receiver holds the data directory."""


class DataDirClaim:
    """The lock on a data directory (released by ``release`` or by the process ending)."""

    def __init__(self, data_dir: Path) -> None:
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {data_dir} is in use by another receiver (pid {holder}); "
                "give each receiver its own --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd: int | None = fd
        self.receiver_id = _receiver_id(data_dir)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _receiver_id(data_dir: Path) -> str:
    """The id kept in the data directory, made on first use."""
    path = data_dir / ID_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    made = uuid.uuid4().hex
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n")
    os.replace(tmp, path)
    return made
