"""Run leases: a run whose client fell silent is ended KILLED, unless it moved to another
receiver.

With several receivers a client may have moved on to another one. So each receiver stamps on
the run (``trackbridge.heard_ms``, at most every quarter lease) when it last heard from the
client, and one whose lease runs out first reads the run back: ended elsewhere, or heard from
elsewhere within the lease, means it is not this receiver's to end. Each run is handled on its
own: MLflow refusing one (its run deleted) quarantines that run and no other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from bridge.events import RunStatus
from server.flush.refusals import RunMissing, RunRefused
from server.flush.retry import Stopping
from server.flush.sink import MlflowSink, RunRef
from server.flush.state import Runs, RunState
from server.flush.writing import RunWriter
from server.queue.sqlite import Queue

_logger = logging.getLogger(__name__)


class Leases:
    """Ends silent runs; called by the flusher between and after runs."""

    def __init__(
        self,
        queue: Queue,
        sink: MlflowSink,
        runs: Runs,
        writer: RunWriter,
        *,
        last_seen: Mapping[str, float],
        lease_s: float,
        interval_s: float,
        on_refused: Callable[[str, str], None],
    ) -> None:
        self._queue = queue
        self._sink = sink
        self._runs = runs
        self._writer = writer
        self._last_seen = last_seen
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._on_refused = on_refused
        self._started = time.monotonic()
        self.due = 0.0
        """When the leases are next looked at (``time.monotonic()``)."""

    def expire(self) -> None:
        """Ends as KILLED the runs whose client has not been heard from for a lease."""
        now = time.monotonic()
        self.due = now + self._interval_s
        for state in self._runs:
            ref, run_key = state.ref, state.key
            if state.status != RunStatus.RUNNING.value or ref is None or state.quarantine:
                continue
            try:
                self._expire(state, ref, now)
            except Stopping:
                raise
            except RunRefused as refusal:
                self._on_refused(run_key, refusal.reason)
            except RunMissing as missing:
                _logger.warning("run %s: %s (seen at its next write)", run_key, missing)
            except Exception as exc:  # MLflow down: the lease is looked at again next time
                _logger.warning("run %s: could not check its lease: %s", run_key, exc)

    def _expire(self, state: RunState, ref: RunRef, now: float) -> None:
        run_key = state.key
        heard = self._last_seen.get(run_key)
        if state.stamped < 0 and (created := self._sink.heard_stamped(ref)) is not None:
            state.stamped = created  # created with the stamp (server/flush/sink.py)
        if heard is not None and heard >= state.stamped + self._lease_s / 4:
            state.stamped = heard
            try:  # advisory: a missed stamp is retried a quarter lease later
                self._sink.mark_heard(ref, _wall_ms(heard))
            except Exception as exc:
                _logger.warning("run %s: could not stamp when it was heard: %s", run_key, exc)
        elsewhere = state.heard_elsewhere
        seen = max(heard or self._started, self._started if elsewhere is None else elsewhere)
        if now - seen < self._lease_s or self._queue.pending(run_key, 1):
            return  # alive, or deliver what it sent first
        answer = self._writer.call(run_key, ref, "read the run", self._sink.run_state, ref)
        mlflow_status, heard_ms = answer
        if mlflow_status != RunStatus.RUNNING.value:
            self._runs.set_status(run_key, mlflow_status)  # ended through another receiver
            return
        silent_s = max(0.0, (time.time_ns() // 10**6 - heard_ms) / 1000)
        if silent_s < self._lease_s:
            _logger.info("run %s: its client now talks to another receiver", run_key)
            state.heard_elsewhere = now - silent_s
            return
        job = state.record.job
        _logger.warning("run %s: no word from its client for %.0f s; KILLED", run_key, now - seen)
        end = self._sink.end_run
        ended = time.time_ns() // 10**6
        self._writer.call(run_key, ref, "end the run", end, ref, job, RunStatus.KILLED, ended)
        self._runs.set_status(run_key, RunStatus.KILLED.value)


def _wall_ms(monotonic_s: float) -> int:
    """The wall-clock time, in ms since the epoch, of a ``time.monotonic()`` reading."""
    return int((time.time() - (time.monotonic() - monotonic_s)) * 1000)
