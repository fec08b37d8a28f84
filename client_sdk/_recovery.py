"""The writer's delivery of spools that dead writers of the same destination left behind.

A thread of its own adopts, when the writer starts, every orphaned spool written for exactly
this writer's receiver(s), job and client id, and delivers each (``spool/delivery.py``: batches,
losses its ledger shows, staged artifacts) on channels of its own, retrying until the receiver
is back or the writer closes. Spools of any other destination are left for their own writer or
for ``trackbridge sync``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from client_sdk._transport import ArtifactTransport, Transport
from client_sdk.config import WriterConfig
from client_sdk.spool.delivery import Delivery, SpoolReport
from client_sdk.spool.file import Spool
from client_sdk.spool.finding import adopt_orphans
from client_sdk.spool.names import Destination, safe_name

_logger = logging.getLogger(__name__)


@dataclass
class _Adopted:
    spool: Spool
    events: int
    """Events in its batches when adopted."""
    report: SpoolReport | None = None
    done: bool = False

    def left(self) -> int:
        if self.report is None:
            return self.events
        if self.done:
            return self.report.events_left
        return max(0, self.events - self.report.events_delivered)


class Recovery:
    """Adopts and delivers orphaned spools of this writer's destination, once."""

    def __init__(self, config: WriterConfig) -> None:
        self._config = config
        self._destination = Destination.of(config.receiver, config.job, config.client_id)
        self._lock = threading.Lock()
        self._adopted: list[_Adopted] = []
        self._thread: threading.Thread | None = None
        self._interrupt = threading.Event()
        self._deadline = float("inf")
        self._transport: Transport | None = None
        self._artifact_transport: ArtifactTransport | None = None
        self.reports: list[SpoolReport] = []
        """One per delivered spool, for tests and status."""

    def start(self) -> None:
        """Starts the thread (once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="trackbridge-recovery", daemon=True
                )
                self._thread.start()

    def pending_events(self) -> int:
        """Events of adopted spools not yet delivered."""
        with self._lock:
            return sum(a.left() for a in self._adopted)

    def flush(self, timeout_s: float) -> bool:
        """Waits until every adopted spool is delivered; False on timeout."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    def close(self, timeout_s: float) -> int:
        """Delivers within ``timeout_s`` and stops; returns events left in adopted spools."""
        self._deadline = time.monotonic() + timeout_s
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, timeout_s) + 0.5)
            if thread.is_alive():
                self._interrupt.set()
                thread.join(2.0)
        for transport in (self._transport, self._artifact_transport):
            if transport is not None:
                transport.close()
        return self.pending_events()

    def reset_after_fork(self) -> None:
        """In a forked child: let go of the parent's adopted spools and thread."""
        self._lock = threading.Lock()
        for adopted in self._adopted:
            if not adopted.done:
                adopted.spool.abandon()
        self._adopted = []
        self._thread = None
        self._transport = self._artifact_transport = None

    # -- the recovery thread -------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._config.spool_dir
        try:
            found = adopt_orphans(
                Path(self._config.spool_dir),
                lambda d: d == self._destination,
                prefix=f"{safe_name(self._config.client_id)}-",
            )
        except OSError as exc:
            _logger.warning(
                "trackbridge: cannot look for spools left in %s: %s", self._config.spool_dir, exc
            )
            return
        for problem in found.problems:
            _logger.warning("trackbridge: %s", problem)
        for spool in found.adopted:
            if spool.damage:
                _logger.warning(
                    "trackbridge: the spool %s could not be read (%s); it is moved aside (.corrupt)"
                    " and a fresh one takes its place; what its ledger shows is accounted for",
                    spool.path,
                    spool.damage,
                )
            with self._lock:
                self._adopted.append(_Adopted(spool, spool.outstanding_events()))
        for adopted in list(self._adopted):
            self._deliver(adopted)

    def _deliver(self, adopted: _Adopted) -> None:
        spool = adopted.spool
        _logger.info("trackbridge: delivering what %s holds", spool.path)
        delivery = Delivery(
            spool,
            self._events(),
            self._artifacts,
            deadline=lambda: self._deadline,
            interrupt=self._interrupt,
            max_backoff_s=self._config.retry_max_backoff_s,
        )
        adopted.report = delivery.report
        try:
            report = delivery.run()
        except Exception:
            _logger.exception("trackbridge: delivering %s failed; it stays for later", spool.path)
            report = delivery.report
        for problem in report.problems:
            _logger.warning("trackbridge: %s", problem)
        for note in report.notes:
            _logger.info("trackbridge: %s", note)
        if not report.clean:
            _logger.warning("trackbridge: %s", report.summary())
        spool.close(delete=report.complete)
        with self._lock:
            adopted.done = True
            self.reports.append(report)

    def _events(self) -> Transport:
        if self._transport is None:
            c = self._config
            self._transport = Transport(c.receiver, c.rpc_timeout_s, c.security)
        return self._transport

    def _artifacts(self) -> ArtifactTransport:
        if self._artifact_transport is None:
            self._artifact_transport = ArtifactTransport(
                self._config.receiver, self._config.security
            )
        return self._artifact_transport
