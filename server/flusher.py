"""The flusher: moves stored batches to MLflow on a timer, or early when a run has a full batch.

A run's batches are written in sequence order. A batch is deleted from the queue only after
everything in it reached MLflow; after a crash the rest is written again, which MLflow absorbs
(identical metric points are stored once, a param re-logged with its value is a no-op, a tag
is overwritten with the same value).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from bridge.convert import event_from_proto
from bridge.events import Metric, Param, RunEnd, RunStart, RunStatus, Tag
from bridge.limits import MAX_METRICS_PER_BATCH, split_log_batch
from bridge.pb.v1 import events_pb2
from server.mlflow_sink import MlflowSink, RunRef, is_permanent
from server.queue import Backlog, PendingBatch, Queue

_logger = logging.getLogger(__name__)

_BATCHES_PER_READ = 64
_RETRY_WINDOW_S = 20.0
T = TypeVar("T")


@dataclass(slots=True)
class FlushStats:
    """Counters of the flusher's work."""

    events_flushed: int = 0
    log_batch_calls: int = 0
    dead_letters: int = 0
    mlflow_errors: int = 0
    cycles: int = 0


class _Stopping(Exception):
    """The shutdown deadline passed while MLflow was failing."""


class Flusher:
    """Owns the thread that writes the queue to MLflow."""

    def __init__(
        self,
        queue: Queue,
        sink: MlflowSink,
        *,
        interval_s: float,
        on_run: Callable[[str, str, str], None],
        backlog: Backlog,
        last_seen: Mapping[str, float],
        lease_s: float,
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._interval_s = interval_s
        self._on_run = on_run
        self._backlog = backlog
        self._last_seen = last_seen
        self._lease_s = lease_s
        self._started = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._deadline = float("inf")
        self._deadline_moved = threading.Event()
        self._lock = threading.Lock()
        self._unflushed: defaultdict[str, int] = defaultdict(int)
        self._runs = {r.run_key: r for r in queue.runs()}
        self._status = {r.run_key: r.status for r in self._runs.values()}
        self._refs = {
            r.run_key: RunRef(r.mlflow_run_id, r.mlflow_experiment_id)
            for r in self._runs.values()
            if r.mlflow_run_id
        }
        self._thread = threading.Thread(target=self._loop, name="trackbridge-flusher", daemon=True)
        self.stats = FlushStats()
        self.last_error = ""

    def start(self) -> None:
        """Starts the timer thread."""
        self._thread.start()

    def stored(self, run_key: str, count: int) -> None:
        """Tells the flusher that ``count`` events of a run were stored (ingest thread)."""
        with self._lock:
            self._unflushed[run_key] += count
            full = self._unflushed[run_key] >= MAX_METRICS_PER_BATCH
        if full:
            self._wake.set()

    def stop(self, timeout_s: float) -> bool:
        """Flushes everything stored within ``timeout_s``; True when the queue is empty."""
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._deadline_moved.set()
        self._wake.set()
        self._thread.join(timeout_s + 1.0)
        return self._queue.pending_count() == 0 if not self._thread.is_alive() else False

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            try:
                self._cycle()
            except _Stopping:
                return
            except Exception as exc:
                self.stats.mlflow_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                _logger.warning("flush to MLflow failed (%s); retrying next tick", self.last_error)
            if stopping and (self._queue.pending_count() == 0 or self._out_of_time()):
                return

    def _out_of_time(self) -> bool:
        return time.monotonic() >= self._deadline

    def _cycle(self) -> None:
        self.stats.cycles += 1
        for run_key in self._queue.runs_with_pending():
            with self._lock:
                self._unflushed.pop(run_key, None)
            while batches := self._queue.pending(run_key, _BATCHES_PER_READ):
                self._flush_batches(run_key, batches)
                if len(batches) < _BATCHES_PER_READ:
                    break
        self._expire_leases()
        self.last_error = ""

    def _expire_leases(self) -> None:
        """Ends as KILLED the runs whose client has not been heard from for a lease."""
        now = time.monotonic()
        for run_key, status in list(self._status.items()):
            ref = self._refs.get(run_key)
            seen = self._last_seen.get(run_key, self._started)
            if status != "RUNNING" or ref is None or now - seen < self._lease_s:
                continue
            if self._queue.pending(run_key, 1):
                continue  # deliver what it sent first
            job = self._runs[run_key].job
            _logger.warning(
                "run %s: no word from its client for %.0f s; KILLED", run_key, now - seen
            )
            self._retrying(self._sink.end_run, ref, job, RunStatus.KILLED, time.time_ns() // 10**6)
            self._set_status(run_key, RunStatus.KILLED.value)

    def _set_status(self, run_key: str, status: str) -> None:
        self._status[run_key] = status
        self._queue.set_status(run_key, status)

    def _flush_batches(self, run_key: str, batches: list[PendingBatch]) -> None:
        record = self._runs.get(run_key)
        if record is None:
            self._runs = {r.run_key: r for r in self._queue.runs()}
            record = self._runs[run_key]
        if self._status.get(run_key) == RunStatus.KILLED.value and run_key in self._refs:
            # The client is back after its lease ran out: its run goes on.
            self._retrying(self._sink.resume_run, self._refs[run_key], record.job)
            self._set_status(run_key, RunStatus.RUNNING.value)
        entries: list[Metric | Param | Tag] = []
        for stored in batches:
            msg = events_pb2.EventBatch.FromString(stored.payload)
            for raw in msg.events:
                event = event_from_proto(raw)
                if isinstance(event, Metric | Param | Tag):
                    entries.append(event)
                    continue
                self._write(run_key, entries)
                entries = []
                if isinstance(event, RunStart):
                    self._open(run_key, record.client_id, record.job, event)
                elif isinstance(event, RunEnd):
                    ref = self._open(run_key, record.client_id, record.job, None)
                    self._retrying(
                        self._sink.end_run, ref, record.job, event.status, event.end_time_ms
                    )
                    self._set_status(run_key, event.status.value)
            self._write(run_key, entries)
            entries = []
            self._queue.mark_flushed(run_key, stored.id, stored.last_seq)
            self.stats.events_flushed += stored.last_seq - stored.first_seq + 1
            self._backlog.remove(stored.last_seq - stored.first_seq + 1)

    def _open(self, run_key: str, client_id: str, job: str, start: RunStart | None) -> RunRef:
        ref = self._refs.get(run_key)
        if ref is None or start is not None:
            ref = self._retrying(self._sink.client_run, client_id, job, run_key, start)
            self._refs[run_key] = ref
            self._status.setdefault(run_key, RunStatus.RUNNING.value)
            self._queue.set_mlflow_run(run_key, ref.run_id, ref.experiment_id)
            self._on_run(run_key, ref.run_id, ref.experiment_id)
        return ref

    def _write(self, run_key: str, entries: list[Metric | Param | Tag]) -> None:
        if not entries:
            return
        record = self._runs[run_key]
        ref = self._open(run_key, record.client_id, record.job, None)
        for chunk in split_log_batch(entries):
            try:
                self._retrying(self._sink.log, ref.run_id, chunk)
                self.stats.log_batch_calls += 1
            except Exception as exc:
                if not is_permanent(exc):
                    raise
                # One bad entry must not hold back the rest: write them one by one and keep
                # the ones MLflow refuses, with its reason.
                singles: tuple[Metric | Param | Tag, ...] = (
                    *chunk.metrics,
                    *chunk.params,
                    *chunk.tags,
                )
                for entry in singles:
                    reason = self._retrying(self._sink.entry_error, ref.run_id, entry)
                    if reason is not None:
                        self._dead_letter(run_key, entry, reason)

    def _dead_letter(self, run_key: str, entry: Metric | Param | Tag, reason: str) -> None:
        kind = type(entry).__name__.lower()
        value = str(entry.value)
        self._queue.add_dead_letter(run_key, kind, entry.key, value, reason)
        self.stats.dead_letters += 1
        _logger.error(
            "MLflow refused %s %r of run %s for good: %s", kind, entry.key, run_key, reason
        )

    def _retrying(self, fn: Callable[..., T], *args: object) -> T:
        def give_up(state: tenacity.RetryCallState) -> bool:
            return self._out_of_time() or (state.seconds_since_start or 0.0) > _RETRY_WINDOW_S

        def note(state: tenacity.RetryCallState) -> None:
            self.stats.mlflow_errors += 1
            exc = state.outcome.exception() if state.outcome else None
            self.last_error = f"{type(exc).__name__}: {exc}"
            _logger.warning("MLflow call failed (%s); retrying", self.last_error)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: not is_permanent(e)),
            wait=tenacity.wait_exponential(multiplier=0.2, max=10.0) + tenacity.wait_random(0, 0.5),
            stop=give_up,
            sleep=self._sleep,
            before_sleep=note,
            reraise=True,
        )
        try:
            return retrying(fn, *args)
        except Exception:
            if self._out_of_time():
                raise _Stopping from None
            raise

    def _sleep(self, seconds: float) -> None:
        # A backoff ends early when shutdown sets a deadline that comes sooner.
        end = time.monotonic() + seconds
        while (left := min(end, self._deadline) - time.monotonic()) > 0:
            if self._deadline_moved.wait(left):
                self._deadline_moved.clear()
