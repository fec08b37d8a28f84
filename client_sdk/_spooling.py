"""The writer's own spool through its troubles: made on first need, written until it fails,
retried with backoff, and replaced once nothing in it is needed.

When the spool cannot be written (disk full, I/O error, read-only, damaged), the sender leaves
the events in the writer's bounded buffer and asks here again later (exponential backoff up to
``retry_max_backoff_s``); sending what is already spooled carries on. A full disk usually
frees itself as the receiver acknowledges spooled batches; when SQLite cannot even delete them
(a full disk refuses the write-ahead log too), the spool is closed and deleted whole once every
batch and artifact in it is accounted for, and a fresh one is made: deleting a file needs no
free space.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from client_sdk.config import WriterConfig
from client_sdk.spool.file import Spool
from client_sdk.spool.names import Destination, SpoolError

_logger = logging.getLogger(__name__)

_FIRST_RETRY_S = 0.2


class SpoolKeeper:
    """Owns this writer's spool file(s); does nothing when the writer keeps no spool."""

    def __init__(self, config: WriterConfig) -> None:
        self._config = config
        self._directory = Path(config.spool_dir) if config.spool_dir else None
        self._destination = Destination.of(config.receiver, config.job, config.client_id)
        self._lock = threading.Lock()
        self._current: Spool | None = None
        self._retry_at = 0.0
        self._delay_s = _FIRST_RETRY_S
        self._failing = ""
        self.failures = 0
        """Times the spool could not be written (or made)."""
        self.spooled_bytes = 0
        """Payload bytes in this writer's spool files, not yet acknowledged."""

    @property
    def enabled(self) -> bool:
        """Whether this writer keeps a spool at all."""
        return self._directory is not None

    @property
    def directory(self) -> Path | None:
        """The spool folder, or None."""
        return self._directory

    @property
    def destination(self) -> Destination:
        """What this writer's spools are written for."""
        return self._destination

    def home(self) -> tuple[Path, Spool | None]:
        """The staging folder for a new artifact and its spool (made now if needed).

        Raises:
            SpoolError: The spool cannot be made.
        """
        with self._lock:
            spool = self._current if self._current is not None else self._make()
            return spool.stage_dir, spool

    def writable(self) -> Spool | None:
        """The spool to append to; None while it is failing and its retry is not due yet."""
        with self._lock:
            if self._failing and time.monotonic() < self._retry_at:
                return None
            current = self._current
            if current is not None and self._failing and current.idle:
                # Nothing in it is needed any more: a fresh file may succeed where it fails.
                self._current = None
                current.close()
            if self._current is None:
                try:
                    self._make()
                except SpoolError as exc:
                    self._note_failure(exc)
                    return None
            return self._current

    def _make(self) -> Spool:
        assert self._directory is not None
        self._current = Spool.create(self._directory, self._destination)
        return self._current

    def failed(self, exc: SpoolError) -> None:
        """An append failed: back off before the next try."""
        with self._lock:
            self._note_failure(exc)

    def _note_failure(self, exc: SpoolError) -> None:
        self.failures += 1
        if not self._failing:
            _logger.warning(
                "trackbridge: %s; new events wait in memory (at most max_buffer_events, then"
                " they are dropped and counted) and the spool is retried",
                exc,
            )
            self._delay_s = _FIRST_RETRY_S
        self._failing = str(exc)
        self._retry_at = time.monotonic() + self._delay_s
        self._delay_s = min(self._delay_s * 2, self._config.retry_max_backoff_s)

    def succeeded(self) -> None:
        """An append went through."""
        if self._failing:
            with self._lock:
                _logger.warning("trackbridge: the spool can be written again")
                self._failing = ""

    def close(self) -> None:
        """Closes every spool file; deletes those with nothing left in them."""
        with self._lock:
            spool, self._current = self._current, None
        if spool is not None:
            try:
                spool.close()
            except OSError as exc:
                _logger.warning("trackbridge: closing the spool %s failed: %s", spool.path, exc)

    def abandon(self) -> None:
        """In a forked child: let go of the parent's spools without touching them."""
        self._lock = threading.Lock()
        if self._current is not None:
            self._current.abandon()
        self._current = None
        self.spooled_bytes = 0
        self._failing = ""
