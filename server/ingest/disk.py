"""The free-space reserve on the receiver's data directory.

A receiver whose disk fills can neither record what it flushed nor delete it, and so never
frees space again. So it keeps a reserve: below it, new batches are refused (RESOURCE_EXHAUSTED
with the reason; clients keep them in their spools and retry), while the flusher, which needs
only a little room to record progress and frees space as it goes, carries on. Space the queue
file can reuse (its free pages, made by flushing) counts as free, and its write-ahead log as
taken, so the receiver takes batches again as soon as flushing has made room, without a
restart.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

_logger = logging.getLogger(__name__)

MIB = 1024 * 1024
CHECK_PERIOD_S = 0.25
"""The file system is asked this often (a Publish costs no system call)..."""
CHECK_SHARE = 8
"""...or sooner, once batches worth 1/8 of the reserve came in since (a burst must not
overshoot the reserve; the queue writes a batch twice, to its log and its file)."""


class DiskReserve:
    """Whether the data directory is below its reserve, and why.

    Args:
        path: The data directory.
        reserve_bytes: The free space kept for the flusher (0: no reserve).
        reusable: Bytes the queue can take without growing (its free pages, less its log).
    """

    def __init__(self, path: Path, reserve_bytes: int, reusable: Callable[[], int]) -> None:
        self._path = path
        self._reserve = reserve_bytes
        self._reusable = reusable
        self._checked = float("-inf")
        self._since = 0
        self.free_bytes = 0
        """Free bytes at the last check, the queue's reusable space included."""
        self.reason = ""
        """Why new batches are refused; "" while there is room."""

    def shortfall(self, incoming: int = 0) -> str:
        """Why new batches are refused ("" while there is room); ``incoming`` is the size of
        the batch that asks."""
        if self._reserve <= 0:
            return ""
        now = time.monotonic()
        self._since += incoming
        if now - self._checked >= CHECK_PERIOD_S or self._since >= self._reserve // CHECK_SHARE:
            self._checked, self._since = now, 0
            self._check()
        return self.reason

    def _check(self) -> None:
        try:
            stat = os.statvfs(self._path)
            free = stat.f_bavail * stat.f_frsize + self._reusable()
        except Exception as exc:
            _logger.warning("cannot check free space in %s: %s", self._path, exc)
            return
        self.free_bytes = free
        was_low = bool(self.reason)
        if free >= self._reserve:
            if was_low:
                _logger.info("data directory %s has room again: taking new batches", self._path)
            self.reason = ""
            return
        self.reason = (
            f"the receiver's data directory {self._path} has {free / MIB:.1f} MiB free, under its"
            f" reserve of {self._reserve / MIB:.0f} MiB (--disk-reserve): new batches wait in"
            " the clients' spools while flushing frees space"
        )
        if not was_low:
            _logger.warning("refusing new batches: %s", self.reason)


def reusable_bytes(conn: sqlite3.Connection, wal: Path) -> int:
    """Space the queue can still take without growing: its free pages (flushing makes them),
    less its write-ahead log (a checkpoint may yet copy that much into the file, and the log
    grows while readers hold a checkpoint back)."""
    pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    try:
        logged = wal.stat().st_size
    except FileNotFoundError:
        logged = 0
    return int(pages) * int(size) - logged
