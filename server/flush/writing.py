"""Writing one run's stored batches to MLflow, in the client's order, with progress per call.

Entries (metrics, params, tags) go out in ``log_batch`` chunks (a read's all in one transaction
with the bulk writer, server/flush/bulk/); the other events (run start,
run end, delete tag) are written alone, in their place (:meth:`RunWriter._apply`: a new kind of
event is one more branch there). After every MLflow call the queue records how far the run got
(:meth:`Queue.advance`), so a restart writes again at most the call that was in flight.

Not even that one when it landed: see server/flush/progress.py.

Refusals. An entry MLflow refuses (a param another writer set to another value) is found by
halving the chunk, kept as a dead letter with MLflow's reason, and the rest of the run goes on.
A refusal that concerns the run itself (its run or experiment deleted, a run MLflow will not
create or end) raises :class:`RunRefused`: the flusher quarantines the run.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from bridge.events import (
    DeleteTag,
    Event,
    MlflowCall,
    RunEnd,
    RunStart,
    RunStatus,
)
from bridge.limits import ROUND_METRIC, split_log_batch
from bridge.pb.v1 import events_pb2
from server.flush import probes
from server.flush.batch_creation import BatchCreator, NewRun
from server.flush.bulk.sink import BulkSink
from server.flush.entries import Item, dead_letter, entries_of
from server.flush.mirror import Mirror
from server.flush.pool import Budget
from server.flush.progress import BATCHES_PER_READ, TAGGED_METRICS, FlushObserver, Progress, Read
from server.flush.refusals import (
    RunMissing,
    deleted_experiment,
    is_missing,
    is_permanent,
    message,
    refused,
)
from server.flush.retry import Retrier
from server.flush.sink import ExperimentDeleted, MlflowSink, RunRef
from server.flush.slices import Rows, Slice, slices, transactions_of
from server.flush.state import FlushStats, Runs
from server.queue.aggregates import is_aggregate_run
from server.queue.gaps import GapLog
from server.queue.sqlite import Backlog, DeadLetter, Queue, RunRecord

_logger = logging.getLogger(__name__)


T = TypeVar("T")


class CallApplier(Protocol):
    """Applies a run's ``MlflowCall`` events (writes beyond metrics, params and tags); the
    receiver's tracking service (``server/tracking/``) provides it."""

    def apply(self, run: RunRef, client_id: str, job: str, call: MlflowCall) -> None:
        """Writes the call to MLflow; raises what MLflow raised (permanent errors are
        dead-lettered, others retried)."""


class RunWriter:
    """Writes runs' batches; raises RunRefused, RunMissing, RunNotCreated or MLflow's error."""

    def __init__(
        self,
        queue: Queue,
        sink: MlflowSink,
        runs: Runs,
        retrying: Retrier,
        stats: FlushStats,
        *,
        backlog: Backlog,
        observer: FlushObserver | None,
        on_run: Callable[[str, str, str], None],
        lease_s: float,
        receiver_id: str,
        gaps: GapLog | None = None,
        calls: CallApplier | None = None,
        mirror: Mirror | None = None,
        round_as_step: bool = False,
        alone: bool = False,
    ) -> None:
        self._queue = queue
        self._alone = alone
        self._mirror = mirror
        self._round_as_step = round_as_step
        self._round_key = "" if round_as_step else ROUND_METRIC
        self._sink = sink
        self._runs = runs
        self._retrying = retrying
        self.stats = stats
        self._backlog = backlog
        self._observer = observer
        self._on_run = on_run
        self._lease_s = lease_s
        self._receiver_id = receiver_id
        self._gaps = gaps
        self._calls = calls
        self._progress = Progress(queue, backlog, stats, observer)
        self._creating = threading.Lock()

    def flush_run(self, run_key: str, budget: Budget) -> bool:
        """Writes a run's pending batches; True when the turn's ``budget`` ended it, perhaps
        with more left (server/flush/pool.py).

        The other sinks hold each read before MLflow gets it (server/flush/mirror.py)."""
        if self._runs.state(run_key).recovering:
            self._recover(run_key)
        while batches := self._queue.pending(run_key, BATCHES_PER_READ):
            if self._mirror is not None:
                self._mirror.cover(self._runs.record(run_key), batches)
            if self._flush_read(run_key, Read(batches), budget):
                return True  # the rest of the read is read again on the run's next turn
            if len(batches) < BATCHES_PER_READ:
                return False
        return False

    def create_together(self, creator: BatchCreator, runs: list[NewRun]) -> dict[str, RunRef]:
        """Creates new runs in a batch, while no turn creates a run; returns them."""
        with self._creating:
            return creator.create(runs)

    def call(self, run_key: str, ref: RunRef, what: str, fn: Callable[..., T], *args: object) -> T:
        """An MLflow call about a run; a refusal for good raises RunRefused (or RunMissing)."""
        try:
            return self._retrying(fn, *args)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            probes.explain_run(self._sink.client, self._retrying, run_key, ref, exc)
            raise refused(what, exc, run_key) from None

    # -- one read --------------------------------------------------------------------------------

    def _flush_read(self, run_key: str, read: Read, budget: Budget) -> bool:
        """Writes a read, in slices; True when the budget ends the turn after one."""
        record = self._runs.record(run_key)
        ref = self._runs.ref(run_key)
        self._runs.note_chosen(run_key, read.batches)
        if self._runs.status(run_key) == RunStatus.KILLED.value and ref is not None:
            # The client is back after its lease ran out: its run goes on.
            self.call(run_key, ref, "reopen the run", self._sink.resume_run, ref, record.job)
            self._runs.set_status(run_key, RunStatus.RUNNING.value)
        rows_of = functools.partial(self._rows_of, run_key)
        dropped = functools.partial(self._gaps.dropped, run_key) if self._gaps else None
        steps = slices(read, budget, rows_of, dropped, self._round_as_step)
        for entries, item, raw in steps:
            self._write(run_key, record, read, entries)
            if item is None:  # the slice ended at budget.cut, or the read did
                if budget.spend(len(entries)):
                    return True
                continue
            started = time.perf_counter()
            assert raw is not None
            dead = self._apply(run_key, record, item.event, raw, item)
            self._progress.advance(
                run_key, read, item.batch, item.seq, item.ordinal, 1 - len(dead), dead, started
            )
            if budget.spend(len(entries) + 1):
                return True
        return False

    def _rows_of(self, run_key: str) -> str:
        """The run whose plain points a slice may write as rows ("": the usual way)."""
        ref = self._runs.ref(run_key)
        if ref is None or not isinstance(self._sink, BulkSink) or not self._sink.bulk:
            return ""
        return ref.run_id

    def _apply(
        self,
        run_key: str,
        record: RunRecord,
        event: Event,
        raw: events_pb2.Event,
        item: Item,
    ) -> list[DeadLetter]:
        """Writes one event that is not a log_batch entry; returns what MLflow refused."""
        if isinstance(event, RunStart):
            self._open(run_key, record, event, opening=item.seq == 1)
            self._runs.keep_start(run_key, raw.SerializeToString())
        elif isinstance(event, RunEnd):
            ref = self._open(run_key, record, None)
            end = self._sink.end_run
            self.call(run_key, ref, "end the run", end, ref, record.job, event.status,
                      event.end_time_ms)  # fmt: skip
            self._runs.set_status(run_key, event.status.value)
        elif isinstance(event, DeleteTag):
            return self._delete_tag(run_key, record, item, event.key)
        elif isinstance(event, MlflowCall):
            return self._apply_call(run_key, record, item, event)
        return []

    def _apply_call(
        self, run_key: str, record: RunRecord, item: Item, call: MlflowCall
    ) -> list[DeadLetter]:
        ref = self._open(run_key, record, None)
        if self._calls is None:
            reason = f"this receiver does not apply {call.method}"
            return [self._dead_letter(run_key, record, item, reason)]
        try:
            self._retrying(self._calls.apply, ref, record.client_id, record.job, call)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            return [self._dead_letter(run_key, record, item, message(exc))]
        return []

    def _delete_tag(
        self, run_key: str, record: RunRecord, item: Item, key: str
    ) -> list[DeadLetter]:
        ref = self._open(run_key, record, None)
        try:
            self._retrying(self._sink.delete_tag, ref.run_id, key)
        except Exception as exc:
            if not is_permanent(exc):
                raise
            probes.explain_run(self._sink.client, self._retrying, run_key, ref, exc)
            return [self._dead_letter(run_key, record, item, message(exc))]
        return []

    def _write(self, run_key: str, record: RunRecord, read: Read, entries: Slice) -> None:
        if not entries:
            return
        ref = self._open(run_key, record, None)
        if isinstance(entries, Rows) and entries.run_id != ref.run_id:
            entries = entries.items(read)  # its run made again meanwhile: the usual way
        each = transactions_of(self._sink, ref.run_id, read, entries, self._round_as_step)
        for write in each:
            batch, seq, ordinal = write.last
            marker = ""
            if write.metrics >= TAGGED_METRICS:  # worth skipping after a crash
                marker = f"{seq} {self._receiver_id}:{os.urandom(4).hex()}"
                self._queue.set_inflight(run_key, marker)
            started = time.perf_counter()
            try:
                self._retrying(write.call, marker)
            except Exception as exc:
                if not is_permanent(exc):
                    raise
                probes.explain_run(self._sink.client, self._retrying, run_key, ref, exc)
                dead = self._bisect(run_key, record, ref, write.items())
            else:
                dead = []
                self.stats.add(log_batch_calls=write.calls, metric_points_written=write.metrics)
            written = write.entries - len(dead)
            self._progress.advance(run_key, read, batch, seq, ordinal, written, dead, started)

    def _bisect(
        self, run_key: str, record: RunRecord, ref: RunRef, items: list[Item]
    ) -> list[DeadLetter]:
        """Writes what MLflow accepts of a refused chunk; returns the entries it refuses."""
        try:
            points = entries_of(items, self._round_as_step)
            for chunk in split_log_batch(points, round_key=self._round_key):
                self._retrying(self._sink.log, ref.run_id, chunk)
                self.stats.add(log_batch_calls=1, metric_points_written=len(chunk.metrics))
        except Exception as exc:
            if not is_permanent(exc):
                raise
            if len(items) == 1:
                return [self._dead_letter(run_key, record, items[0], message(exc))]
            half = len(items) // 2
            return self._bisect(run_key, record, ref, items[:half]) + self._bisect(
                run_key, record, ref, items[half:]
            )
        return []

    def _dead_letter(self, run_key: str, record: RunRecord, item: Item, reason: str) -> DeadLetter:
        letter = dead_letter(record.client_id, record.job, run_key, item, reason)
        self.stats.add(dead_letters=1)
        if self._observer is not None:
            self._observer.dead_lettered(run_key)
        _logger.error(
            "MLflow refused %s %r of run %s for good: %s", letter.kind, letter.key, run_key, reason
        )
        return letter

    # -- the MLflow run --------------------------------------------------------------------------

    def _open(
        self, run_key: str, record: RunRecord, start: RunStart | None, opening: bool = False
    ) -> RunRef:
        ref = self._runs.ref(run_key)
        if ref is not None and start is None:
            return ref
        made = self._runs.take_created(run_key) if start is not None else None
        if made is not None:  # created with the cycle's batch (server/flush/batch_creation.py)
            return self._opened(run_key, made, start, None)
        if is_aggregate_run(run_key):  # a job's cross-client aggregates: its parent run
            with self._creating:
                ref = self._retrying(self._sink.parent_run, record.job)
            self._runs.set_ref(run_key, ref)
            return ref
        # Only the receiver holding a run's start creates it (with the start's experiment,
        # name and tags); one holding later events waits, a lease at most, to find it. A run
        # this receiver started before, gone with another MLflow store, is made again from
        # the start it kept.
        saved = self._runs.saved_start(run_key) if start is None else None
        spec = start or saved
        may_create = spec is not None or self._runs.start_overdue(run_key, self._lease_s)
        find = functools.partial(
            self._sink.client_run, may_create=may_create, opening=opening or saved is not None,
            experiment=None if spec else self._runs.state(run_key).chosen,
            mark=self._runs.mark(run_key), alone=self._alone,
        )  # fmt: skip
        try:
            with self._creating:  # one writer at a time makes runs (and the job's parent)
                ref = self._retrying(find, record.client_id, record.job, run_key, spec)
                if ref.run_id in self._sink.unkept:  # created: its client hears the id now,
                    self._on_run(run_key, ref.run_id, ref.experiment_id)
                    self._retrying(self._sink.keep, ref)  # then the creation's last step
        except ExperimentDeleted as exc:
            raise deleted_experiment(exc.name, exc.experiment_id, run_key) from None
        except Exception as exc:
            if not is_permanent(exc):
                raise
            probes.explain_experiment(self._sink.client, self._retrying, run_key, exc)
            if is_missing(exc):
                raise RunMissing("", message(exc)) from None
            raise refused("create or find the run", exc, run_key) from None
        return self._opened(run_key, ref, start, saved)

    def _opened(
        self, run_key: str, ref: RunRef, start: RunStart | None, saved: RunStart | None
    ) -> RunRef:
        state = self._runs.state(run_key)
        state.missing_since = None
        state.chosen = None
        self._runs.set_ref(run_key, ref)
        if start is not None:  # a run start (or a resume: start_run(run_id=...)) runs
            self._runs.set_status(run_key, RunStatus.RUNNING.value)
        self._queue.set_mlflow_run(run_key, ref.run_id, ref.experiment_id)
        self._on_run(run_key, ref.run_id, ref.experiment_id)
        if saved is not None:
            _logger.info("run %s: MLflow run %s made again from its start", run_key, ref.run_id)
        return ref

    # -- after a crash ---------------------------------------------------------------------------

    def _recover(self, run_key: str) -> None:
        """Skips the log_batch call in flight at the last stop if MLflow has it whole."""
        record = self._runs.record(run_key)
        ref = self._runs.ref(run_key)
        marker = record.inflight
        if marker and ref is not None:
            try:
                tag = self._retrying(probes.progress, self._sink.client, ref)
            except Exception as exc:
                if not is_permanent(exc):
                    raise  # MLflow away: looked at again on the run's next turn
                if is_missing(exc):
                    raise RunMissing(ref.run_id, message(exc)) from None
                tag = ""
            if tag == marker and self._progress.skip_through(run_key, int(marker.split()[0])):
                self._runs.state(run_key).recovering = False
                return
        self._queue.set_inflight(run_key, "")
        self._runs.state(run_key).recovering = False
