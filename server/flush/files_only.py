"""The flusher of a receiver without MLflow (``--sink jsonl:DIR`` alone).

It shares :class:`~server.flush.flusher.Flusher`'s lifecycle (server/flush/timer.py: start,
flush_soon, stop, the ``flusher`` worker) and its face (stored, stats, last_error): every flush
interval, or at once when a run has a full batch,
each run with pending batches hands them to the event sinks and the queue then forgets them
(:meth:`Queue.advance`, one transaction per read). A restart hands again at most the read that
was being written, which the sinks skip (server/flush/jsonl.py). No MLflow run is made, so no
run ends KILLED for silence and nothing is quarantined: a sink's failure holds that run alone,
retried on the next tick, while the others go on.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from bridge.limits import MAX_METRICS_PER_BATCH
from server.flush.mirror import BATCHES_PER_READ, Mirror
from server.flush.progress import FlushObserver
from server.flush.state import FlushStats
from server.flush.timer import FlushTimer, Pass
from server.queue.sqlite import Backlog, PendingBatch, Queue, RunRecord

_logger = logging.getLogger(__name__)


class FileFlusher(FlushTimer):
    """Owns the thread that writes the queue to the event sinks, MLflow aside."""

    def __init__(
        self,
        queue: Queue,
        mirror: Mirror,
        *,
        interval_s: float,
        backlog: Backlog,
        observer: FlushObserver | None = None,
    ) -> None:
        self._queue = queue
        super().__init__(interval_s)
        self._mirror = mirror
        self._backlog = backlog
        self._observer = observer
        self._records: dict[str, RunRecord] = {}
        self._unflushed: dict[str, int] = {}
        self._failing: dict[str, str] = {}
        """Runs whose last turn failed, and why (logged once per new reason)."""
        self._lock = threading.Lock()
        self._deadline = float("inf")
        self.stats = FlushStats()
        self.last_error = ""

    def stored(self, run_key: str, count: int) -> None:
        """Tells the flusher that ``count`` events of a run were stored (ingest thread)."""
        with self._lock:
            self._unflushed[run_key] = self._unflushed.get(run_key, 0) + count
            full = self._unflushed[run_key] >= MAX_METRICS_PER_BATCH
        if full:
            self.flush_soon()

    def stop(self, timeout_s: float) -> bool:
        """Writes everything stored within ``timeout_s``; True when nothing is left."""
        self._deadline = time.monotonic() + timeout_s
        ended = self._stop_timer(timeout_s)
        return ended and self._queue.flushable_count() == 0

    def _pass(self, stopping: bool) -> Pass:
        try:
            more = self._cycle()
        except sqlite3.DatabaseError as exc:
            more = False
            _logger.error("the receiver's queue database failed: %s", exc)
        if stopping and (self._queue.flushable_count() == 0 or time.monotonic() >= self._deadline):
            return Pass.DONE
        # Failing sinks while stopping: tried again on the next tick, within the shutdown budget.
        return Pass.MORE if more else Pass.IDLE

    def _cycle(self) -> bool:
        """Gives every run with pending batches its turn; True when work is left."""
        self.stats.cycles += 1
        failed = False
        more = False
        for run_key in self._queue.runs_with_pending():
            with self._lock:
                self._unflushed.pop(run_key, None)
            try:
                more |= self._turn(run_key, time.monotonic() + max(1.0, self._interval_s))
            except sqlite3.Error:
                raise
            except Exception as exc:
                failed = True
                self.stats.mlflow_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self._failing.get(run_key) != self.last_error:
                    _logger.warning(
                        "run %s: writing its events failed (%s); tried again every tick",
                        run_key,
                        self.last_error,
                    )
                self._failing[run_key] = self.last_error
                continue
            if self._failing.pop(run_key, None) is not None:
                _logger.info("run %s: its events are written again", run_key)
        if not failed:
            self.last_error = ""
        return more

    def _turn(self, run_key: str, until: float) -> bool:
        record = self._records.get(run_key)
        if record is None:
            record = self._queue.run(run_key)
            if record is None:
                return False
            self._records[run_key] = record
        while batches := self._queue.pending(run_key, BATCHES_PER_READ):
            started = time.perf_counter()
            self._mirror.cover(record, batches)
            events = sum(_remaining(b) for b in batches)
            last_seq = batches[-1].last_seq
            self._queue.advance(
                run_key, [b.id for b in batches], None, flushed_seq=last_seq, written=events
            )
            self.stats.events_flushed += events
            self._backlog.remove(events)
            if self._observer is not None:
                self._observer.flushed(run_key, last_seq, events, time.perf_counter() - started)
            if len(batches) < BATCHES_PER_READ:
                return False
            if time.monotonic() >= until:
                return True
        return False


def _remaining(batch: PendingBatch) -> int:
    """Events of a batch not written before (as the queue's ``REMAINING``)."""
    return batch.last_seq - max(batch.first_seq - 1, batch.done_seq)
