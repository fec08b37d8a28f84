"""Names shared by the spool's modules: file names, destinations, errors."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import TrackbridgeError
from client_sdk._targets import split_receivers

SUFFIX = ".spool.db"
CORRUPT = ".corrupt"
"""Appended to the database's name (and its ``-wal``/``-shm``) when it is moved aside."""
ARTIFACTS_DIR = "artifacts"
MANIFEST = "manifest.json"
"""Beside each staged artifact copy: what it is and where it goes (``client_sdk/_staging.py``)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a spool's events go: receiver address(es), job and client id."""

    receiver: str
    """Comma-separated ``host:port`` list, sorted (the order a writer lists them in is not part
    of the destination)."""
    job: str
    client_id: str

    @classmethod
    def of(cls, receiver: str, job: str, client_id: str) -> Destination:
        """The destination of a writer with these settings."""
        return cls(normalized_receiver(receiver), job, client_id)

    def describe(self) -> str:
        """For messages: ``receiver R, job J, client C``."""
        return f"receiver {self.receiver}, job {self.job}, client {self.client_id}"


def normalized_receiver(receiver: str) -> str:
    """``receiver`` with its entries stripped and sorted."""
    entries = sorted(dict.fromkeys(item.strip() for item in receiver.split(",")))
    split_receivers(",".join(entries))  # raises ValueError for a malformed address
    return ",".join(entries)


class SpoolError(TrackbridgeError):
    """A spool that cannot be written or read; the message says which and why."""


class SpoolBusy(SpoolError):
    """The spool's lock is held: its writer is alive."""


class SpoolGone(SpoolError):
    """The spool was deleted (its writer closed it empty) before it could be opened."""


def safe_name(client_id: str) -> str:
    """A client id as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", client_id)[:100]


def make_private_dir(path: Path, levels: int = 1) -> None:
    """Creates ``path`` if missing, and its parents; the last ``levels`` folders, when made
    here, are 0700 (those above are the user's, made with the default mode)."""
    if path.is_dir():
        return
    if levels > 1:
        make_private_dir(path.parent, levels - 1)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """A batch on disk (its payload is a serialized ``EventBatch``)."""

    id: int
    run_key: str
    first_seq: int
    last_seq: int


def sqlite_files(path: Path) -> list[Path]:
    """A SQLite database and its ``-wal`` and ``-shm`` files."""
    return [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
