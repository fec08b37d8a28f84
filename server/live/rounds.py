"""Per-round health for the live view (page, ``top``, ``/metrics``), read from the queue's
aggregate tables (:mod:`server.aggregate.health`) through a read-only connection of its own,
at most once a second."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from server.aggregate.health import RoundHealth, all_rounds
from server.queue.schema import open_read_only

_logger = logging.getLogger(__name__)

REFRESH_S = 1.0
"""How stale the rounds shown may be."""


class RoundsView:
    """Every job's latest rounds, re-read at most every :data:`REFRESH_S` (event loop only).

    Args:
        queue_path: The receiver's queue database.
    """

    def __init__(self, queue_path: Path) -> None:
        self._path = queue_path
        self._conn: sqlite3.Connection | None = None
        self._read_at = -REFRESH_S
        self._rounds: dict[str, list[RoundHealth]] = {}

    def all(self) -> dict[str, list[RoundHealth]]:
        """``{job: rounds, latest first}``."""
        now = time.monotonic()
        if now - self._read_at >= REFRESH_S:
            self._read_at = now
            try:
                if self._conn is None:
                    self._conn = open_read_only(self._path)
                self._rounds = all_rounds(self._conn, time.time_ns() // 1_000_000)
            except Exception as exc:  # a queue not there yet, or busy: read again next time
                _logger.debug("live view: rounds not read: %s", exc)
        return self._rounds

    def lines(self, job: str = "") -> list[str]:
        """One line per round of ``job`` (or of every job, then prefixed with its name)."""
        return [
            f"job {j} {r.line()}" if not job else r.line()
            for j, rounds in self.all().items()
            if job in ("", j)
            for r in rounds
        ]

    def close(self) -> None:
        """Closes its connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
