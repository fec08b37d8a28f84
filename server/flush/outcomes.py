"""What happens to a run when MLflow has answered for it, applied to its :class:`RunState` on the
flusher's thread: a turn's outcome (server/flush/pool.py ``Turn``), a quarantine, a run MLflow
does not know, a replay that released a quarantined run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from server.flush.backoff import Backoffs
from server.flush.pool import Turn, TurnResult
from server.flush.progress import FlushObserver
from server.flush.refusals import RunMissing, RunRefused, purged
from server.flush.sink import MlflowSink
from server.flush.state import Arrivals, FlushStats, Runs, RunState
from server.flush.store_identity import StoreChange, StoreIdentity
from server.queue.sqlite import Queue

_logger = logging.getLogger(__name__)


class Outcomes:
    """Applies what MLflow's answers mean for each run (the flusher's thread only)."""

    def __init__(
        self,
        queue: Queue,
        runs: Runs,
        arrivals: Arrivals,
        backoffs: Backoffs,
        *,
        sink: MlflowSink,
        identity: StoreIdentity | None,
        observer: FlushObserver | None,
        stats: FlushStats,
        wait_s: float,
        on_failed: Callable[[str, BaseException], None],
    ) -> None:
        self._queue = queue
        self._runs = runs
        self._arrivals = arrivals
        self._backoffs = backoffs
        self._sink = sink
        self._identity = identity
        self._observer = observer
        self._stats = stats
        self._wait_s = wait_s
        self._on_failed = on_failed
        self.change: StoreChange | None = None
        """Another store, found while turns were in flight: the flusher applies it once they
        end."""

    def apply(self, state: RunState, result: TurnResult) -> Turn:
        """Applies a turn's outcome to its run's state."""
        error = result.error
        if isinstance(error, RunRefused):
            self.quarantine(state, error.reason)
        elif isinstance(error, RunMissing):
            self._on_missing(state, error)
        elif result.turn is Turn.NOT_CREATED:
            state.retry_at = time.monotonic() + self._wait_s
        elif result.turn is Turn.FAILED:
            self.back_off(state, cast(BaseException, error))
        elif result.turn is not Turn.HELD:
            state.retry_at, state.failures = 0.0, 0
        state.gave_way = result.turn is Turn.MORE
        self._arrivals.note(state)
        return result.turn

    def back_off(self, state: RunState, exc: BaseException) -> None:
        """A write of the run failed: it waits its back-off, the others go on."""
        self._backoffs.run_failed(state)
        self._on_failed(state.key, exc)

    def quarantine(self, state: RunState, reason: str) -> None:
        """MLflow refuses the run for good: its events are held in the queue."""
        self._queue.quarantine(state.key, reason)
        state.quarantine, state.held, state.retry_at, state.failures = reason, 0, 0.0, 0
        self._arrivals.note(state)
        record = state.record
        _logger.error(
            "run %s (client %r, job %r) quarantined, its events held in the queue: %s",
            state.key, record.client_id, record.job, reason,
        )  # fmt: skip

    def sync_held(self) -> None:
        """Catches up with the quarantines in the queue (a replay releases runs behind the
        flusher's back) and counts what they hold."""
        held = {h.run_key: h for h in self._queue.held()}
        for state in self._runs:
            if state.quarantine and state.key not in held:
                state.quarantine, state.held, state.retry_at, state.missing = "", 0, 0.0, 0
                self._runs.reload(state.key)  # a replay --new-run forgets its MLflow run
                self._arrivals.note(state)
                _logger.info("run %s: released by a replay; its events go to MLflow again",
                             state.key)  # fmt: skip
        for run_key, h in held.items():
            state = self._runs.state(run_key)
            state.quarantine = h.reason
            if h.events > state.held and self._observer is not None:
                self._observer.dead_lettered(run_key, h.events - state.held)
            state.held = h.events
            self._arrivals.note(state)
        self._stats.quarantined_runs = len(held)
        self._stats.held_events = sum(h.events for h in held.values())

    def _on_missing(self, state: RunState, missing: RunMissing) -> None:
        """MLflow does not know a run the receiver does: another store, or a run purged."""
        try:
            change = self._identity.check() if self._identity is not None else None
        except Exception as exc:
            self.back_off(state, exc)
            return
        if change is not None:
            self.change = change
            return
        self._sink.forget()  # a cached parent run may be what is gone
        state.missing += 1
        if (state.ref is not None and missing.run_id == state.ref.run_id) or state.missing >= 2:
            self.quarantine(state, purged(missing.run_id or str(missing), state.key).reason)
        else:
            state.retry_at = time.monotonic() + self._wait_s
