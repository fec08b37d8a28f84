"""One receiver per data directory, and the id that directory gives it across restarts.

Two receivers on one queue would flush the same batches twice, so a receiver holds an exclusive
lock on ``<data dir>/receiver.lock`` while it runs (the kernel lets go when the process dies,
however it dies). The id in ``<data dir>/receiver-id`` names the receiver in what it leaves in
MLflow (server/flush/run_creation.py), so that a restarted receiver recognises its own.

The directory holds every payload clients sent (``queue.db``), so it is kept 0700 and its files
0600, whatever the umask: :func:`secure` tightens what is there at start, and the receiver's own
files are created private (:func:`create_private`, :func:`write_private`).
"""

from __future__ import annotations

import fcntl
import os
import stat
import uuid
from pathlib import Path

from bridge.errors import StartupError

LOCK_FILE = "receiver.lock"
ID_FILE = "receiver-id"


class DataDirInUse(StartupError, RuntimeError):
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
    write_private(path, made + "\n")
    return made


def secure(data_dir: Path) -> None:
    """Creates the data directory if needed; makes it and its folders 0700, its files 0600."""
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs:
            _tighten(Path(root, name), 0o700)
        for name in files:
            _tighten(Path(root, name), 0o600)


def _tighten(path: Path, mode: int) -> None:
    try:
        current = path.lstat()
        if not stat.S_ISLNK(current.st_mode) and stat.S_IMODE(current.st_mode) & 0o077:
            os.chmod(path, mode)
    except FileNotFoundError:
        pass  # gone meanwhile (a temporary file)


def create_private(path: Path) -> None:
    """Creates an empty file 0600 unless it exists (SQLite then gives its -wal and -shm files
    the same mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))


def write_private(path: Path, text: str) -> None:
    """Replaces ``path`` atomically with ``text``, in a file only the owner can read."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)
