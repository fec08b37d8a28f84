"""The flusher: moves stored batches to MLflow on a timer, or early when a run has a full batch.

A run's batches are written in sequence order. A batch is deleted from the queue only after
everything in it reached MLflow; after a crash the rest is written again, which MLflow absorbs
(identical metric points are stored once, a param re-logged with its value is a no-op, a tag
is overwritten with the same value).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mlflow.exceptions import MlflowException

from bridge.convert import event_from_proto
from bridge.events import DeleteTag, Metric, MlflowCall, Param, RunEnd, RunStart, RunStatus, Tag
from bridge.limits import MAX_METRICS_PER_BATCH, split_log_batch
from bridge.pb.v1 import events_pb2
from server.flush.retry import Retrier, Stopping
from server.flush.run_creation import RunNotCreated
from server.flush.sink import MlflowSink, RunRef, is_permanent
from server.queue.sqlite import Backlog, PendingBatch, Queue

_logger = logging.getLogger(__name__)

# A run's pending batches are written together, in as few log_batch calls as the limits allow.
_BATCHES_PER_READ = 16


@dataclass(slots=True)
class FlushStats:
    """Counters of the flusher's work."""

    events_flushed: int = 0
    log_batch_calls: int = 0
    dead_letters: int = 0
    mlflow_errors: int = 0
    cycles: int = 0


class FlushObserver(Protocol):
    """Told what the flusher did, on the flusher's thread (the live view, /metrics)."""

    def flushed(self, run_key: str, last_seq: int, events: int, seconds: float) -> None:
        """A stored batch of ``events`` events, up to ``last_seq``, reached MLflow."""

    def dead_lettered(self, run_key: str) -> None:
        """MLflow refused an entry of the run for good."""


class CallApplier(Protocol):
    """Applies a run's ``MlflowCall`` events (writes beyond metrics, params and tags); the
    receiver's tracking service (``server/tracking/``) provides it."""

    def apply(self, run: RunRef, client_id: str, job: str, call: MlflowCall) -> None:
        """Writes the call to MLflow; raises what MLflow raised (permanent errors are
        dead-lettered, others retried)."""


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
        observer: FlushObserver | None = None,
        calls: CallApplier | None = None,
    ) -> None:
        self._observer = observer
        self._calls = calls
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
        self._retrying = Retrier(self._note_error)
        self._lock = threading.Lock()
        self._unflushed: defaultdict[str, int] = defaultdict(int)
        self._runs = {r.run_key: r for r in queue.runs()}
        self._status = {r.run_key: r.status for r in self._runs.values()}
        self._refs = {
            r.run_key: RunRef(r.mlflow_run_id, r.mlflow_experiment_id)
            for r in self._runs.values()
            if r.mlflow_run_id
        }
        # Scale-out: runs whose start another receiver holds, and lease bookkeeping shared
        # through MLflow (see _expire_leases).
        self._missing_since: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self._stamped: dict[str, float] = {}
        self._heard_elsewhere: dict[str, float] = {}
        self._leases_due = 0.0
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
        # A new run is created at once, so that its client learns the MLflow run id quickly.
        if full or run_key not in self._refs:
            self._wake.set()

    def flush_soon(self) -> None:
        """Asks for a flush now (a client waits to read what it wrote)."""
        self._wake.set()

    def stop(self, timeout_s: float) -> bool:
        """Flushes everything stored within ``timeout_s``; True when the queue is empty."""
        self._retrying.stop_at(time.monotonic() + timeout_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s + 1.0)
        return self._queue.pending_count() == 0 if not self._thread.is_alive() else False

    def _loop(self) -> None:
        next_tick = time.monotonic() + self._interval_s
        while True:
            # Ticks are counted from the start of the previous one, so a slow flush does not
            # stretch the interval on top of itself.
            self._wake.wait(max(0.0, next_tick - time.monotonic()))
            self._wake.clear()
            next_tick = time.monotonic() + self._interval_s
            stopping = self._stop.is_set()
            try:
                self._cycle()
            except Stopping:
                return
            except Exception as exc:
                self.stats.mlflow_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                _logger.warning("flush to MLflow failed (%s); retrying next tick", self.last_error)
            if stopping and (self._queue.pending_count() == 0 or self._out_of_time()):
                return

    def _out_of_time(self) -> bool:
        return self._retrying.out_of_time()

    def _note_error(self, exc: BaseException | None) -> None:
        self.stats.mlflow_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        _logger.warning("MLflow call failed (%s); retrying", self.last_error)

    def _cycle(self) -> None:
        self.stats.cycles += 1
        for run_key in self._queue.runs_with_pending():
            if self._retry_at.get(run_key, 0.0) > time.monotonic():
                continue  # waiting for another receiver to create its MLflow run
            with self._lock:
                self._unflushed.pop(run_key, None)
            try:
                while batches := self._queue.pending(run_key, _BATCHES_PER_READ):
                    self._flush_batches(run_key, batches)
                    if time.monotonic() >= self._leases_due:
                        self._expire_leases()  # a long backlog must not hold back the leases
                    if len(batches) < _BATCHES_PER_READ:
                        break
            except RunNotCreated:
                self._retry_at[run_key] = time.monotonic() + max(1.0, self._interval_s)
        self._expire_leases()
        self.last_error = ""

    def _expire_leases(self) -> None:
        """Ends as KILLED the runs whose client has not been heard from for a lease.

        With several receivers a client may have moved on to another one. So each receiver
        stamps on the run (``trackbridge.heard_ms``, at most every quarter lease) when it last
        heard from the client, and one whose lease runs out first reads the run back: ended
        elsewhere, or heard from elsewhere within the lease, means it is not this receiver's
        to end.
        """
        now = time.monotonic()
        self._leases_due = now + self._interval_s
        for run_key, status in list(self._status.items()):
            ref = self._refs.get(run_key)
            if status != "RUNNING" or ref is None:
                continue
            heard = self._last_seen.get(run_key)
            if heard is not None and heard >= self._stamped.get(run_key, -1e18) + self._lease_s / 4:
                self._stamped[run_key] = heard
                try:  # advisory: a missed stamp is retried a quarter lease later
                    self._sink.mark_heard(ref, _wall_ms(heard))
                except Exception as exc:
                    _logger.warning("run %s: could not stamp when it was heard: %s", run_key, exc)
            seen = max(heard or self._started, self._heard_elsewhere.get(run_key, self._started))
            if now - seen < self._lease_s or self._queue.pending(run_key, 1):
                continue  # alive, or deliver what it sent first
            mlflow_status, heard_ms = self._retrying(self._sink.run_state, ref)
            if mlflow_status != RunStatus.RUNNING.value:
                self._set_status(run_key, mlflow_status)  # ended through another receiver
                continue
            silent_s = max(0.0, (time.time_ns() // 10**6 - heard_ms) / 1000)
            if silent_s < self._lease_s:
                _logger.info("run %s: its client now talks to another receiver", run_key)
                self._heard_elsewhere[run_key] = now - silent_s
                continue
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
        started = time.perf_counter()
        for stored in batches:
            msg = events_pb2.EventBatch.FromString(stored.payload)
            for seq, raw in enumerate(msg.events, start=stored.first_seq):
                event = event_from_proto(raw)
                if isinstance(event, Metric | Param | Tag):
                    entries.append(event)
                    continue
                self._write(run_key, entries)
                entries = []
                if isinstance(event, RunStart):
                    self._open(run_key, record.client_id, record.job, event, seq == 1)
                elif isinstance(event, RunEnd):
                    ref = self._open(run_key, record.client_id, record.job, None)
                    self._retrying(
                        self._sink.end_run, ref, record.job, event.status, event.end_time_ms
                    )
                    self._set_status(run_key, event.status.value)
                elif isinstance(event, DeleteTag):
                    self._delete_tag(run_key, record.client_id, record.job, event.key)
                elif isinstance(event, MlflowCall):
                    self._apply_call(run_key, record.client_id, record.job, event)
        self._write(run_key, entries)
        # Only now is every batch of this read in MLflow; a crash before this line writes them
        # again, which MLflow absorbs (see the module docstring).
        last = batches[-1]
        count = sum(b.last_seq - b.first_seq + 1 for b in batches)
        self._queue.mark_flushed(run_key, last.id, last.last_seq)
        self.stats.events_flushed += count
        self._backlog.remove(count)
        if self._observer is not None:
            self._observer.flushed(run_key, last.last_seq, count, time.perf_counter() - started)

    def _open(
        self,
        run_key: str,
        client_id: str,
        job: str,
        start: RunStart | None,
        opening: bool = False,
    ) -> RunRef:
        ref = self._refs.get(run_key)
        if ref is None or start is not None:
            # Only the receiver holding a run's start creates it (with the start's experiment,
            # name and tags); one holding later events waits, a lease at most, to find it.
            may_create = start is not None or self._start_overdue(run_key)
            find = functools.partial(self._sink.client_run, may_create=may_create, opening=opening)
            ref = self._retrying(find, client_id, job, run_key, start)
            self._missing_since.pop(run_key, None)
            self._refs[run_key] = ref
            if start is not None:  # a run start (or a resume: start_run(run_id=...)) runs
                self._set_status(run_key, RunStatus.RUNNING.value)
            self._status.setdefault(run_key, RunStatus.RUNNING.value)
            self._queue.set_mlflow_run(run_key, ref.run_id, ref.experiment_id)
            self._on_run(run_key, ref.run_id, ref.experiment_id)
        return ref

    def _start_overdue(self, run_key: str) -> bool:
        """Whether the receiver holding this run's start has had a lease to create it."""
        now = time.monotonic()
        since = self._missing_since.setdefault(run_key, now)
        if since == now:
            _logger.info(
                "run %s: its start went to another receiver; waiting for it to create the"
                " MLflow run (then this receiver creates it itself after %.0f s)",
                run_key,
                self._lease_s,
            )
        return now - since >= self._lease_s

    def _delete_tag(self, run_key: str, client_id: str, job: str, key: str) -> None:
        ref = self._open(run_key, client_id, job, None)
        try:
            self._retrying(self._sink.delete_tag, ref.run_id, key)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            reason = str(getattr(exc, "message", exc))
            self._queue.add_dead_letter(run_key, "delete_tag", key, "", reason)
            self.stats.dead_letters += 1
            if self._observer is not None:
                self._observer.dead_lettered(run_key)
            _logger.error("MLflow refused delete_tag %r of run %s: %s", key, run_key, reason)

    def _apply_call(self, run_key: str, client_id: str, job: str, call: MlflowCall) -> None:
        ref = self._open(run_key, client_id, job, None)
        try:
            if self._calls is None:
                raise MlflowException(f"this receiver does not apply {call.method}")
            self._retrying(self._calls.apply, ref, client_id, job, call)
        except Exception as exc:
            if self._calls is not None and not is_permanent(exc):
                raise
            reason = str(getattr(exc, "message", exc))
            self._queue.add_dead_letter(run_key, "mlflow_call", call.method, "", reason)
            self.stats.dead_letters += 1
            if self._observer is not None:
                self._observer.dead_lettered(run_key)
            _logger.error("MLflow refused %s of run %s: %s", call.method, run_key, reason)

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
        if self._observer is not None:
            self._observer.dead_lettered(run_key)
        _logger.error(
            "MLflow refused %s %r of run %s for good: %s", kind, entry.key, run_key, reason
        )


def _wall_ms(monotonic_s: float) -> int:
    """The wall-clock time, in ms since the epoch, of a ``time.monotonic()`` reading."""
    return int((time.time() - (time.monotonic() - monotonic_s)) * 1000)
