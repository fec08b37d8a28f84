"""The Writer: MLflow-shaped logging calls that append to memory and return."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Mapping

from bridge.convert import check_run_start
from bridge.events import Event, Metric, Param, RunEnd, RunStart, RunStatus, Tag
from bridge.validation import (
    MAX_INT64,
    MIN_INT64,
    check_encodable,
    check_param_unchanged,
    validate_experiment_name,
    validate_metric_key,
    validate_param,
    validate_step_and_timestamp,
    validate_tag,
)
from client_sdk._artifact_calls import ArtifactCalls
from client_sdk._artifacts import ArtifactSender
from client_sdk._batches import BufferItem, DropCounter
from client_sdk._handles import RunHandle
from client_sdk._recovery import Recovery
from client_sdk._results import CloseResult
from client_sdk._rounds import RoundCalls, RoundScope, resolve, with_default
from client_sdk._sender import Sender
from client_sdk._transport import Transport
from client_sdk._values import CLOSED_DROP, FULL_DROP, checked_value, defines_run
from client_sdk.config import WriterConfig
from client_sdk.system_metrics import for_writer, stop_sampler

__all__ = ["RunHandle", "Writer"]

_logger = logging.getLogger(__name__)
_live_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Writer(ArtifactCalls, RoundCalls):
    """Logs metrics, params and tags of this client's runs to a trackbridge receiver.

    Log calls validate their input (raising MLflow's errors), append to a bounded in-memory
    buffer and return; a background thread batches and sends. Transport trouble is never
    raised here: it is retried, counted and logged. Thread-safe.

    Args:
        receiver: Receiver address ``host:port`` (else ``TRACKBRIDGE_RECEIVER``).
        client_id: This client's id (else ``TRACKBRIDGE_CLIENT_ID``, else the host name).
        job: Job name (else ``TRACKBRIDGE_JOB``, else ``"default"``).
        config: A complete configuration; excludes the three arguments above.
        env: The environment to read; ``os.environ`` by default.
        system_metrics: Sample the host into the active run (``client_sdk.system_metrics``).
    """

    def __init__(
        self,
        receiver: str | None = None,
        client_id: str | None = None,
        job: str | None = None,
        *,
        config: WriterConfig | None = None,
        env: Mapping[str, str] = os.environ,
        system_metrics: bool | None = None,
    ) -> None:
        if config is None:
            config = WriterConfig.resolve(receiver, client_id, job, env=env)
        elif receiver is not None or client_id is not None or job is not None:
            raise ValueError("pass either config or receiver/client_id/job, not both")
        self.config = config = config.overridden(system_metrics=system_metrics)
        self._buffer: deque[BufferItem] = deque()
        self._max_buffer = config.max_buffer_events
        self._batch_events = config.max_batch_events
        self._drops = DropCounter()
        transport = Transport(config.receiver, config.rpc_timeout_s, config.security)
        self._sender = Sender(config, self._buffer, transport, self._drops)
        keeper = self._sender.keeper
        self._artifacts = ArtifactSender(config, keeper.home if keeper.enabled else None)
        self._recovery = Recovery(config) if keeper.enabled else None
        self._lock = threading.Lock()
        self._active: RunHandle | None = None
        self._last: RunHandle | None = None
        self._metric_keys: set[str] = set()
        self._rounds = RoundScope()
        self._closed = False
        self._started = False
        self._result: CloseResult | None = None
        _live_writers.add(self)
        atexit.register(self._close_at_exit)
        self._system = for_writer(self)  # None unless config.system_metrics

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        run_name: str | None = None,
        *,
        experiment: str | None = None,
        tags: Mapping[str, object] | None = None,
        description: str | None = None,
        parent: RunHandle | None = None,
        run_id: str | None = None,
    ) -> RunHandle:
        """Starts a run (the receiver creates it; ``run_id`` resumes this client's) as active.

        Raises:
            MlflowException: A tag or the experiment name is invalid (MLflow's rules), or the
                run start is larger than one event may be (a description of megabytes).
            RuntimeError: Another run is active (end it first) or the writer is closed.
        """
        checked = {str(k): validate_tag(k, str(v)) for k, v in (tags or {}).items()}
        if experiment is not None:
            validate_experiment_name(experiment)
        start = RunStart(
            experiment=experiment or "",
            run_name=check_encodable(run_name or ""),
            tags=checked,
            description=check_encodable(description or ""),
            start_time_ms=_now_ms(),
            parent_run_key=parent.run_key if parent is not None else "",
            resume_run_id=run_id or "",
        )
        check_run_start(start)
        with self._lock:
            if self._active is not None:
                raise RuntimeError(
                    f"Run with key {self._active.run_key} is already active; end it first."
                )
            handle = RunHandle(uuid.uuid4().hex, run_name or self.config.client_id, self)
            self._active = handle
        self._enqueue(handle.run_key, start)
        return handle

    def end_run(
        self, status: RunStatus | str = RunStatus.FINISHED, run: RunHandle | None = None
    ) -> None:
        """Ends the active run (or ``run``) with ``status``."""
        status = RunStatus(status)
        with self._lock:
            target = run or self._active
            if target is None or target.ended:
                return
            target.ended = True
            if target is self._active:
                self._active = None
                self._last = target
        self._enqueue(target.run_key, RunEnd(status, _now_ms()))

    @property
    def active_run(self) -> RunHandle | None:
        """The run that log calls without ``run`` go to."""
        return self._active

    def _target(self, run: RunHandle | None) -> RunHandle:
        if run is not None:
            return run
        active = self._active
        return active if active is not None else self.start_run()

    # -- logging (the hot path) ---------------------------------------------------------------

    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        timestamp: int | None = None,
        *,
        run: RunHandle | None = None,
        round: int | None = None,
        num_examples: int | None = None,
    ) -> None:
        """Logs one metric point; ``timestamp`` is in milliseconds (default: now). ``round``
        (from 1) and ``num_examples`` (the weight of the receiver's cross-client mean) default
        to those of the enclosing ``federated_round`` block; see docs/how-to/rounds.md."""
        target = run if run is not None else (self._active or self._target(None))
        if key not in self._metric_keys:
            validate_metric_key(key)
            self._metric_keys.add(key)
        ts = _now_ms() if timestamp is None else timestamp
        if type(value) is not float:
            value = checked_value(key, value, ts)
        if step is None:
            step = 0
        # Fast path for plain in-range ints; anything else gets MLflow's checks and wording.
        if (
            type(step) is not int
            or type(ts) is not int
            or not MIN_INT64 <= step <= MAX_INT64
            or not 0 <= ts <= MAX_INT64
        ):
            validate_step_and_timestamp(key, value, step, ts)
            step, ts = int(step), int(ts)
        # The hot path buffers the point's fields as a flat tuple rather than a Metric: that
        # saves half the call's cost (bench section a); the sender builds the wire form.
        if round is None and num_examples is None and self._rounds.current is None:
            self._push((target.run_key, key, value, step, ts))
        else:
            r, n = resolve(round, num_examples, self._rounds.current)
            self._push((target.run_key, key, value, step, ts, r, n))

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int | None = None,
        timestamp: int | None = None,
        *,
        run: RunHandle | None = None,
        round: int | None = None,
        num_examples: int | None = None,
    ) -> None:
        """Logs several metrics at one step, time and round. All are checked before any is
        logged."""
        ts = _now_ms() if timestamp is None else timestamp
        r, n = resolve(round, num_examples, self._rounds.current)
        points = []
        for key, value in metrics.items():
            validate_metric_key(key)
            fvalue = checked_value(key, value, ts)
            validate_step_and_timestamp(key, fvalue, 0 if step is None else step, ts)
            points.append(Metric(key, fvalue, 0 if step is None else int(step), int(ts), r, n))
        target = self._target(run)
        for point in points:
            self._enqueue(target.run_key, point)

    def log_param(self, key: str, value: object, *, run: RunHandle | None = None) -> object:
        """Logs a param (stringified, as MLflow does) and returns ``value``."""
        self.log_params({key: value}, run=run)
        return value

    def log_params(self, params: Mapping[str, object], *, run: RunHandle | None = None) -> None:
        """Logs several params. All are checked before any is logged."""
        target = self._target(run)
        checked = [(k, validate_param(k, str(v))) for k, v in params.items()]
        with self._lock:
            for key, value in checked:
                check_param_unchanged(target._params, key, value, target.run_id or target.run_key)
            for key, value in checked:
                target._params[key] = value
        for key, value in checked:
            self._enqueue(target.run_key, Param(key, value))

    def set_tag(self, key: str, value: object, *, run: RunHandle | None = None) -> None:
        """Sets a tag (stringified, as MLflow does)."""
        self.set_tags({key: value}, run=run)

    def set_tags(self, tags: Mapping[str, object], *, run: RunHandle | None = None) -> None:
        """Sets several tags. All are checked before any is set."""
        target = self._target(run)
        checked = [(k, validate_tag(k, str(v))) for k, v in tags.items()]
        for key, value in checked:
            self._enqueue(target.run_key, Tag(key, value))

    def enqueue(self, run: RunHandle, event: Event) -> None:
        """Appends an event of ``run`` that the caller has validated already (the MLflow
        compatibility layers check their input themselves, with MLflow's exact wording); a
        metric takes the round of the enclosing ``federated_round`` block."""
        self._enqueue(run.run_key, with_default(event, self._rounds.current))

    def _enqueue(self, run_key: str, event: Event) -> None:
        self._push((run_key, event))

    def _push(self, item: BufferItem) -> None:
        buffer = self._buffer
        if (len(buffer) >= self._max_buffer and not defines_run(item)) or self._closed:
            self._drop(item)
            return
        buffer.append(item)
        if not self._started:
            self._start()
        if len(buffer) >= self._batch_events:
            self._sender.wake()

    def _start(self) -> None:
        self._started = True
        self._sender.start()
        if self._recovery is not None:
            self._recovery.start()

    def _drop(self, item: BufferItem) -> None:
        if self._drops.add(item[0]) == 1:
            _logger.warning(CLOSED_DROP if self._closed else FULL_DROP)

    @property
    def dropped_events(self) -> int:
        """Events dropped: the writer was closed, the spool and buffer were full (the receiver
        is told, per run: ``trackbridge.dropped_events``), or, after the call, the wire could
        not carry them or the receiver refused them. Run starts and ends are never dropped."""
        return self._drops.total

    # -- delivery ------------------------------------------------------------------------------

    def run_id(self, run: RunHandle | None = None, timeout_s: float = 0.0) -> str:
        """MLflow's id of ``run`` (default: the active run, else the run ended last), waiting up
        to ``timeout_s`` for it."""
        target = run or self._active or self._last
        if target is None:
            return ""
        deadline = time.monotonic() + timeout_s
        # The receiver creates the MLflow run as soon as the run's start arrives.
        self.flush(timeout_s)
        while not target.run_id:
            left = deadline - time.monotonic()
            if left <= 0 or self._sender.lookup_run_id(target.run_key, min(left, 2.0)):
                break
            time.sleep(min(0.02, max(0.0, left)))
        return target.run_id

    @property
    def pending_events(self) -> int:
        """Events logged (or left by a dead writer of this destination) but not yet
        acknowledged by the receiver."""
        adopted = self._recovery.pending_events() if self._recovery is not None else 0
        return self._sender.pending_events() + adopted

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Waits until every event logged so far (and left by a dead writer of this
        destination) is acknowledged; False if time ran out. Artifacts travel apart and are
        not waited for (``writer.artifacts.flush(timeout_s)`` waits for them)."""
        if not self._started:
            return True
        deadline = time.monotonic() + timeout_s
        done = self._sender.flush(timeout_s)
        if self._recovery is not None:
            done = self._recovery.flush(max(0.0, deadline - time.monotonic())) and done
        return done

    def close(self, timeout_s: float | None = None, *, end_run: bool = True) -> CloseResult:
        """Ends the active run (FINISHED; ``end_run=False`` leaves it for another process to
        resume by run id), drains within ``timeout_s`` and stops.

        Idempotent (a second call returns the first one's result). Returns a ``CloseResult``:
        an ``int``, the events that did not reach the receiver (undelivered + dropped), with
        ``undelivered_events``, ``dropped_events`` and ``artifacts_left`` as attributes.
        """
        with self._lock:
            if self._closed:
                return self._result if self._result is not None else CloseResult(0, 0, 0)
        stop_sampler(self._system)  # no sample after the run's end
        if self._active is not None and end_run:
            self.end_run(RunStatus.FINISHED)
        with self._lock:
            self._closed = True
        atexit.unregister(self._close_at_exit)
        budget = self.config.close_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        # Events first (small, and the run's end is among them), then files.
        left = self._sender.close(budget)
        if self._recovery is not None:
            left += self._recovery.close(max(0.0, deadline - time.monotonic()))
        files = self._artifacts.close(max(0.5, deadline - time.monotonic()))
        self._sender.close_spool()
        self._result = CloseResult(left, self.dropped_events, files)
        if self.dropped_events:
            _logger.warning(
                "trackbridge: %d events were dropped (the receiver was told)", self.dropped_events
            )
        return self._result

    def _close_at_exit(self) -> None:
        self.close(self.config.close_timeout_s)

    def _reset_after_fork(self) -> None:
        # The parent's runs and sequence numbers stay the parent's: a child that logs starts
        # its own run rather than reusing numbers the receiver has already seen.
        self._buffer.clear()
        self._lock = threading.Lock()
        self._active = None
        self._started = False
        self._system = None  # the sampling thread is the parent's
        self._sender.reset_after_fork()
        if self._recovery is not None:
            self._recovery.reset_after_fork()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._active is not None:
            self.end_run(RunStatus.FAILED if exc_type is not None else RunStatus.FINISHED)
        self.close()


def _after_fork_in_child() -> None:
    for writer in list(_live_writers):
        writer._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
