"""The writer's delivery of spools that dead writers of the same destination left behind.

A worker of its own adopts, when the writer starts, every orphaned spool written for exactly
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

from bridge.worker import OnFailure, Worker
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
    released: bool = False
    """Closed undelivered at the writer's close (left on disk for the next writer)."""

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
        self._looked = False
        """Whether the orphans were looked for (a restarted worker does not look again)."""
        # RESTART: the adopted spools are this object's (and on disk); a restart delivers
        # those not done yet.
        self._worker = Worker("recovery", self._loop, on_failure=OnFailure.RESTART)
        self._interrupt = threading.Event()
        self._deadline = float("inf")
        self._transport: Transport | None = None
        self._artifact_transport: ArtifactTransport | None = None
        self.reports: list[SpoolReport] = []
        """One per delivered spool, for tests and status."""

    def start(self) -> None:
        """Starts the thread (once)."""
        with self._lock:
            self._worker.start()

    def pending_events(self) -> int:
        """Events of adopted spools not yet delivered."""
        with self._lock:
            return sum(a.left() for a in self._adopted)

    def flush(self, timeout_s: float) -> bool:
        """Waits until every adopted spool is delivered; False on timeout."""
        return self._worker.join(time.monotonic() + timeout_s)

    def close(self, timeout_s: float) -> int:
        """Delivers within ``timeout_s`` and stops; returns events left in adopted spools."""
        self._deadline = time.monotonic() + timeout_s
        ended = self._worker.join(self._deadline + 0.5)
        if not ended:
            self._interrupt.set()
            ended = self._worker.stop(time.monotonic() + 2.0)
        if ended:  # spools not delivered (interrupted, failed) stay on disk for the next writer
            with self._lock:
                for adopted in self._adopted:
                    if not adopted.done and not adopted.released:
                        adopted.released = True
                        adopted.spool.close(delete=False)
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
        self._looked = False
        self._worker.reset_after_fork()
        self._transport = self._artifact_transport = None

    # -- the recovery thread -------------------------------------------------------------------

    def _loop(self, worker: Worker) -> None:
        if not self._looked:
            # Looked for once: after a failure half way, the spools not adopted stay on disk
            # for the next writer or ``trackbridge sync`` (adopting twice would send twice).
            self._looked = True
            self._adopt()
        for adopted in list(self._adopted):
            if self._interrupt.is_set():
                return
            if not adopted.done:
                # What Delivery does not expect reaches the worker: logged with its traceback,
                # this spool tried again after a pause.
                self._deliver(adopted)

    def _adopt(self) -> None:
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
        report = delivery.run()
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
