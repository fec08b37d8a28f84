"""The flusher: moves stored batches to MLflow on a timer, or early when a run has a full batch.

One run's trouble is nobody else's. Each cycle gives every run with pending batches a turn (at
most about a second of MLflow's time, and a slice of its entries when another run waits:
server/flush/pool.py; a cycle with work left starts the next at once). MLflow's answer decides
what happens to that run alone:

- a refusal for good concerning the run (its run or experiment deleted, a run MLflow will not
  create or end) *quarantines* it: its events stay in the queue, held, with the reason and the
  fix, and cost no MLflow call until ``trackbridge dead-letters replay`` releases them;
- a transient failure (MLflow down, 5xx, "database is locked") is retried in place for one
  retry window, then the run waits a backoff of its own (0.5 s doubling to 10 s) while the
  others go on; when two runs in a row fail before any succeeds (or MLflow cannot say which
  store it is), MLflow is failing for everyone and the whole cycle pauses instead, asking
  MLflow nothing however many batches arrive; it is logged once, then once a minute at most
  (server/flush/outage.py);
- a run id MLflow does not know makes the flusher check which store it writes to
  (server/flush/store_identity.py): another store means the runs are made again there.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import cast

from bridge.limits import MAX_METRICS_PER_BATCH
from server.flush.backoff import Backoffs
from server.flush.batch_creation import BatchCreator, new_runs
from server.flush.leases import Leases
from server.flush.mirror import Mirror
from server.flush.outage import Outage
from server.flush.outcomes import Outcomes
from server.flush.pool import Budget, Gate, Serialized, Turn, TurnPool, TurnResult
from server.flush.progress import FlushObserver
from server.flush.refusals import RunMissing, RunRefused
from server.flush.retry import Retrier, Stopping
from server.flush.run_creation import RunNotCreated
from server.flush.sink import MlflowSink, RunRef
from server.flush.state import Arrivals, FlushStats, Runs, RunState
from server.flush.store_identity import StoreChange, StoreIdentity, describe
from server.flush.timer import FlushTimer, Pass
from server.flush.writing import CallApplier, RunWriter
from server.queue.gaps import GapLog
from server.queue.sqlite import Backlog, Queue

__all__ = ["CallApplier", "FlushObserver", "FlushStats", "Flusher"]

_logger = logging.getLogger(__name__)


class Flusher(FlushTimer):
    """Owns the thread that writes the queue to MLflow (its lifecycle: server/flush/timer.py)."""

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
        identity: StoreIdentity | None = None,
        receiver_id: str = "",
        gaps: GapLog | None = None,
        calls: CallApplier | None = None,
        mirror: Mirror | None = None,
        round_as_step: bool = False,
        workers: int = 1,
        alone: bool = False,
    ) -> None:
        if mirror is not None:
            workers = 1  # the other sinks write from one thread
        # The pool's writers share the queue's connection, one at a time (server/flush/pool.py).
        self._gate = Gate()
        queue = cast(Queue, Serialized(queue, self._gate))
        gaps = cast(GapLog, Serialized(gaps, self._gate)) if gaps is not None else None
        self._pool = TurnPool(sink.turns_at_once(workers))
        self._queue = queue
        self._mirror = mirror
        self._sink = sink
        super().__init__(interval_s)
        self._on_run = on_run
        self._backlog = backlog
        self._observer = observer
        self._identity = identity
        self._new_runs = threading.Event()
        self._retrying = Retrier(self._note_error)
        self._arrivals = Arrivals()
        self.stats = FlushStats()
        self.last_error = ""
        self._outage = Outage(sink.tracking_uri)
        self._runs = Runs(queue)
        for state in self._runs:
            self._arrivals.note(state)
        self._made: dict[str, RunRef] = {}
        """Runs made together while turns were in flight: theirs at the next cycle."""
        self._writer = RunWriter(
            queue, sink, self._runs, self._retrying, self.stats, backlog=backlog,
            observer=observer, on_run=on_run, lease_s=lease_s, receiver_id=receiver_id, gaps=gaps,
            calls=calls, mirror=mirror, round_as_step=round_as_step, alone=alone,
        )  # fmt: skip
        self._leases = Leases(
            queue, sink, self._runs, self._writer, last_seen=last_seen, lease_s=lease_s,
            interval_s=interval_s,
            on_refused=lambda key, why: self._outcomes.quarantine(self._runs.state(key), why),
        )  # fmt: skip
        self._creator = BatchCreator(sink, receiver_id, alone=alone,
                                     attempting=queue.mark_create_tried)  # fmt: skip
        self._backoffs = Backoffs()
        self._outcomes = Outcomes(
            queue, self._runs, self._arrivals, self._backoffs, sink=sink, identity=identity,
            observer=observer, stats=self.stats, wait_s=max(1.0, interval_s),
            on_failed=self._run_failed,
        )  # fmt: skip
        self._requeued = queue.requeued_events()
        self._turn_seconds = max(1.0, interval_s)

    def stored(self, run_key: str, count: int) -> None:
        """Tells the flusher that ``count`` events of a run were stored (ingest thread)."""
        new, unflushed = self._arrivals.stored(run_key, count)
        if not unflushed:
            return  # held until replayed: nothing to hurry
        # A new run is created at once, so that its client learns the MLflow run id quickly.
        if new:
            self._new_runs.set()  # even in the middle of a cycle
            self.flush_soon()
        elif unflushed >= MAX_METRICS_PER_BATCH:
            self.flush_soon()

    def stop(self, timeout_s: float) -> bool:
        """Flushes everything stored within ``timeout_s``; True when nothing is left to write
        (what quarantined runs hold waits for a replay, and does not count)."""
        self._retrying.stop_at(time.monotonic() + timeout_s)
        if self._stop_timer(timeout_s):
            self._pool.close()
        drained = not self.worker.alive and self._queue.flushable_count() == 0
        self._gate.close()
        return drained

    def _pass(self, stopping: bool) -> Pass:
        more = False
        try:
            more = self._cycle(stopping)
        except Stopping:
            return Pass.DONE
        except sqlite3.DatabaseError as exc:
            if self._gate.shut:
                return Pass.DONE  # stop() ran out of time and shut the queue: the rest stays
            _logger.error("the receiver's queue database failed: %s", exc)
        except Exception as exc:
            self.stats.add(mlflow_errors=1)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._outage.failed(self.last_error)
        if stopping and (self._retrying.out_of_time() or self._drained()):
            return Pass.DONE
        return Pass.MORE if more else Pass.IDLE

    def _drained(self) -> bool:
        try:
            return self._queue.flushable_count() == 0
        except sqlite3.ProgrammingError:
            return True  # stop() ran out of time and shut the queue

    def _note_error(self, exc: BaseException | None) -> None:
        self.stats.add(mlflow_errors=1)
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._outage.failed(self.last_error)

    def _cycle(self, stopping: bool) -> bool:
        """Gives every run with pending batches its turn; True when work is left."""
        self.stats.cycles += 1
        self._outcomes.sync_held()
        requeued = self._queue.requeued_events()
        if requeued > self._requeued:
            self._backlog.add(requeued - self._requeued)
            self._requeued = requeued
        self._mirror_ahead()
        now = time.monotonic()
        # Paused, MLflow is asked nothing: a client's every batch wakes the flusher.
        if not stopping and now < self._backoffs.paused_until:
            return False
        if self._identity is not None and not self._identity.checked:
            self._check_identity(self._identity)
        failures = progressed = 0
        more = False
        self._new_runs.clear()
        self._arrivals.new_cycle()  # from now on: what arrives while the turns write
        # Every state the turns need is loaded now: none is added while turns are in flight.
        pending = [self._runs.state(k) for k in self._queue.runs_with_pending()]
        self._create_together([s.key for s in pending], now)
        self._adopt_made()
        due = [s for s in pending if not s.quarantine and (stopping or s.retry_at <= now)]
        in_flight = frozenset(s.key for s in due)
        due.sort(key=lambda s: s.gave_way)  # round robin: whoever gave way goes last
        # A turn gives way after a slice only when a run waits: for a writer of the pool (more
        # runs due than writers), or outside the cycle (its events arrived since it began).
        turn = functools.partial(
            self._turn, others_due=len(due) > self._pool.workers, in_flight=in_flight
        )
        turns = self._pool.turns(due, turn)
        for state, result in turns:
            outcome = self._outcomes.apply(state, result)
            if self._outcomes.change is not None:  # another store: once the turns in flight end
                turns.close()
                self._store_changed(self._outcomes.change)
                return True
            if self._new_runs.is_set():  # a job starting while the cycle writes the others
                self._new_runs.clear()
                self._create_together(self._queue.runs_with_pending(), now, in_flight)
            if outcome is Turn.FAILED:
                failures += 1
                if not progressed and failures >= 2:
                    turns.close()  # the turns in flight end first
                    self._pause()
                    return False
                continue
            progressed += 1
            more |= outcome is Turn.MORE
            if self._pool.workers == 1 and time.monotonic() >= self._leases.due:
                self._leases.expire()  # a long backlog must not hold back the leases
        self._leases.expire()
        if not failures and (progressed or not any(s.failures for s in self._runs)):
            self.last_error = ""
            self._backoffs.all_well()
            if progressed:
                self._outage.succeeded()
        return more

    def _check_identity(self, identity: StoreIdentity) -> None:
        """Which store MLflow is; when it cannot be asked, everyone waits (a pause)."""
        try:
            change = identity.check()
        except Exception:
            self._pause()
            raise
        self._outage.succeeded()
        if change is not None:
            self._store_changed(change)

    def _adopt_made(self) -> None:
        """Gives the runs made together while turns were in flight their MLflow runs."""
        for run_key, ref in self._made.items():
            state = self._runs.state(run_key)
            state.created = ref
            self._arrivals.note(state)
        self._made.clear()

    def _create_together(
        self, run_keys: list[str], now: float, in_flight: frozenset[str] = frozenset()
    ) -> None:
        """Creates new runs in one batch (server/flush/batch_creation.py), but those whose
        turn is ``in_flight``; what it leaves is created run by run in the runs' turns. While
        turns are in flight no state is touched: what it made is the runs' at the next cycle."""

        def may_create(run_key: str) -> bool:
            state = self._runs.get(run_key)
            if state is None:  # arrived while the turns are in flight
                return True
            return (
                state.ref is None
                and state.created is None
                and not state.quarantine
                and state.retry_at <= now
            )

        keys = [k for k in run_keys if k not in in_flight and k not in self._made and may_create(k)]
        new = new_runs(self._queue, keys) if len(keys) >= 2 else []
        if len(new) < 2:  # one run alone costs as much either way
            return
        try:
            made = self._writer.create_together(self._creator, new)
        except Exception as exc:
            self._outage.failed(
                f"creating {len(new)} new runs together: {type(exc).__name__}: {exc}"
            )
            return
        for run_key, ref in made.items():  # its client learns the MLflow run id at once
            self._made[run_key] = ref
            self._on_run(run_key, ref.run_id, ref.experiment_id)

    def _turn(
        self, state: RunState, others_due: bool = False, in_flight: frozenset[str] = frozenset()
    ) -> TurnResult:
        """Writes one run, on a pool thread (its state is the turn's while it lasts): how it
        went, for the flusher's thread to apply. The turn gives way after a slice when
        ``others_due`` (other runs wait for their turn in this cycle) or events arrive for a
        run that has no turn in it (not ``in_flight``)."""
        if state.quarantine:  # since the cycle began (its lease, say)
            return TurnResult(Turn.HELD)
        run_key = state.key

        def others_wait() -> bool:
            return others_due or self._arrivals.others(in_flight | {run_key})

        budget = Budget(time.monotonic() + self._turn_seconds, others_wait, time.monotonic)
        try:
            more = self._writer.flush_run(run_key, budget)
        except RunRefused as refusal:
            return TurnResult(Turn.REFUSED, refusal)
        except RunMissing as missing:
            return TurnResult(Turn.MISSING, missing)
        except RunNotCreated:  # its start is with another receiver
            return TurnResult(Turn.NOT_CREATED)
        except (Stopping, sqlite3.Error):
            raise
        except Exception as exc:
            return TurnResult(Turn.FAILED, exc)
        return TurnResult(Turn.MORE if more else Turn.DONE)

    def _mirror_ahead(self) -> None:
        if self._mirror is not None:
            held = [s.key for s in self._runs if s.quarantine]
            keys = [*self._queue.runs_with_pending(), *held]
            self._mirror.ahead(keys, self._runs.record, self._turn_seconds)

    def _store_changed(self, change: StoreChange) -> None:
        """MLflow is another store: every run is made again there (no turn is in flight)."""
        self._outcomes.change = None
        waiting = len(self._queue.runs_with_pending())
        lost = self._queue.forget_mlflow_runs()
        if self._identity is not None:
            self._identity.note_lost(lost)
        self._runs.forget_mlflow()
        self._made.clear()
        self._sink.forget()
        for state in self._runs:
            self._arrivals.note(state)
            self._on_run(state.key, "", "")
        _logger.warning("%s", describe(change, waiting))

    def _run_failed(self, run_key: str, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._outage.failed(f"run {run_key}: {self.last_error}")

    def _pause(self) -> None:
        """MLflow fails for every run: everyone waits, rather than each run in turn."""
        self._backoffs.pause(self._runs)
