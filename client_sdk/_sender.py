"""The background sender: drains the writer's buffer into serialized per-run batches, spools
them, keeps them (in memory and in the spool) until the receiver acks them, and sends them.

A batch gets its sequence numbers only once it is in the spool (or, for a writer that keeps
none, in memory): when the spool cannot be written the events stay in the writer's bounded
buffer and the spool is tried again later (``_spooling.py``), so nothing is numbered that could
vanish without a trace. Events the buffer had to drop, and spooled batches that could no longer
be read, are reported to the receiver in their run's sequence (a ``Dropped`` event, in a batch
of its own: a receiver that predates it refuses only that batch).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import tenacity

from bridge.events import DROPPED_SPOOL_LOST, Dropped
from bridge.pb.v1 import events_pb2, ingest_pb2
from bridge.worker import OnFailure, Worker
from client_sdk._batches import (
    BufferItem,
    DropCounter,
    Pending,
    RunState,
    SenderStats,
    build,
    report_batch,
)
from client_sdk._linger import AdaptiveLinger
from client_sdk._spooling import SpoolKeeper
from client_sdk._transport import EventTransport, Transport, TransportError
from client_sdk.config import WriterConfig
from client_sdk.spool.file import Spool
from client_sdk.spool.names import SpoolError

_logger = logging.getLogger(__name__)

# How long one batch is retried before the sender goes back to its tick (and tries again).
_RETRY_WINDOW_S = 30.0
# Events moved from the buffer per spool transaction, in batches: a failing spool costs one
# such chunk of work per retry, not the whole buffer.
_CHUNK_BATCHES = 8


class Sender:
    """Owns the thread that moves buffered events to the receiver."""

    def __init__(
        self,
        config: WriterConfig,
        buffer: deque[BufferItem],
        transport: EventTransport,
        drops: DropCounter,
    ) -> None:
        self._config = config
        self._buffer = buffer
        self._transport = transport
        self._drops = drops
        self._runs: dict[str, RunState] = {}
        self._lock = threading.Lock()
        self._cycled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._deadline = float("inf")
        # RESTART: its runs and spool survive a failed cycle; a fresh pass goes on from them.
        self._worker = Worker("sender", lambda _w: self._loop(), on_failure=OnFailure.RESTART)
        self._fresh_transport = False  # set in a forked child: a new channel before sending
        self.keeper = SpoolKeeper(config)
        self._held_bytes = 0
        self._full_warned = False
        # Exponential backoff with jitter, spelled in terms every tenacity >= 8.2 has.
        self._backoff = tenacity.wait_exponential(
            multiplier=0.05, max=config.retry_max_backoff_s
        ) + tenacity.wait_random(0, 0.1)
        self.stats = SenderStats()
        self.linger = AdaptiveLinger(config.min_linger_s, config.linger_s)

    # -- called from the writer's threads -------------------------------------------------

    def start(self) -> None:
        """Starts the thread, once (it makes the spool when it first needs one)."""
        with self._lock:
            if self._worker.started or self._stop.is_set():
                return
            if self._fresh_transport:
                self._fresh_transport = False
                self._transport = Transport(
                    self._config.receiver, self._config.rpc_timeout_s, self._config.security
                )
            self._worker.start()

    def wake(self) -> None:
        """Asks for a send now, not at the linger's end; once (set's lock: half a log_metric)."""
        if not self._wake.is_set():
            self._wake.set()

    def run_state(self, run_key: str) -> RunState | None:
        """The sender's view of a run (its MLflow id once the receiver has sent it)."""
        with self._lock:
            return self._runs.get(run_key)

    def pending_events(self) -> int:
        """Events logged but not yet acknowledged by the receiver."""
        with self._lock:
            return len(self._buffer) + sum(r.pending_events() for r in self._runs.values())

    def _busy(self) -> bool:
        return bool(self._buffer) or self._drops.due or any(r.pending for r in self._runs.values())

    def lookup_run_id(self, run_key: str, timeout_s: float) -> str:
        """The run's MLflow id from the receiver (waiting up to ``timeout_s``); "" if none yet."""
        try:
            ack = self._transport.get_run(self._config.client_id, run_key, timeout_s, await_id=True)
        except TransportError:
            return ""
        with self._lock:
            run = self._runs.get(run_key)
            if run is not None and ack.mlflow_run_id:
                run.run_id = ack.mlflow_run_id
                run.experiment_id = ack.mlflow_experiment_id
        return ack.mlflow_run_id

    def flush(self, timeout_s: float) -> bool:
        """Waits until every event logged so far is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cycled:
            while self._busy():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._worker.alive:
                    return False
                self._wake.set()
                self._cycled.wait(min(remaining, self._config.linger_s))
        return True

    def close(self, timeout_s: float) -> int:
        """Drains within ``timeout_s`` and stops the thread; returns events left
        unacknowledged (those in the spool stay there for the next writer or ``trackbridge
        sync``). The spool is closed by ``close_spool``, once the artifacts are done too."""
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wake.set()
        if not self._worker.stop(self._deadline + 1.0):
            self._interrupt.set()
            self._worker.join(time.monotonic() + 1.0)
        self._transport.close()
        return self.pending_events()

    def close_spool(self) -> None:
        """Closes the spool (deleting it when nothing in it is needed), unless the thread is
        stuck in a call that still uses it."""
        if not self._worker.alive:
            self.keeper.close()

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's thread, channel, spool and events."""
        self._lock = threading.Lock()
        self._cycled = threading.Condition(self._lock)
        self._worker.reset_after_fork()
        self._runs.clear()
        self.keeper.abandon()
        self._held_bytes = 0
        # No gRPC call in a fork handler (it can deadlock the child before exec): the new
        # channel is made when the child first logs.
        self._fresh_transport = True

    # -- the sender thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._wake.wait(min(self.linger.seconds, max(self._deadline - time.monotonic(), 0)))
            self._wake.clear()  # before the take: a wake() that finds it set is in this cycle
            try:
                self._cycle()
            except Exception:
                self.stats.cycle_errors += 1
                _logger.exception("trackbridge sender cycle failed; retrying on the next tick")
            with self._cycled:
                self._cycled.notify_all()
                done = not self._busy()
            if self._stop.is_set() and (done or time.monotonic() >= self._deadline):
                return

    def _cycle(self) -> None:
        self._take_buffered()
        for run in list(self._runs.values()):
            while run.pending and time.monotonic() < self._deadline:
                if not self._send_next(run):
                    return  # the receiver is unreachable: every run would fail alike
        self._heartbeat()

    def _heartbeat(self) -> None:
        """Tells the receiver that quiet open runs are alive, so their lease does not run out
        (within close's deadline: a receiver that does not answer must not hold close)."""
        now = time.monotonic()
        for run in list(self._runs.values()):
            if run.ended or run.pending or now - run.last_contact < self._config.heartbeat_s:
                continue
            timeout_s = min(self._config.rpc_timeout_s, self._deadline - time.monotonic())
            if timeout_s <= 0:
                return
            run.last_contact = now
            try:
                self._transport.get_run(self._config.client_id, run.key, timeout_s)
            except TransportError as exc:
                _logger.debug("trackbridge heartbeat for run %s failed: %s", run.key, exc)

    def _take_buffered(self) -> None:
        """Moves buffered events into numbered, spooled batches, a chunk at a time, while the
        spool takes them (else they wait in the buffer, which drops and counts past its
        bound), then the drop reports that are due."""
        chunk = self._config.max_batch_events * _CHUNK_BATCHES
        left = len(self._buffer)  # what is there now: a fast logger must not keep this busy
        while True:
            if self._full():
                return
            items = [self._buffer.popleft() for _ in range(min(chunk, left))]
            left -= len(items)
            reports = self._drops.take() if not left else []
            if not items and not reports:
                return
            if not self._store(items, reports):
                self._buffer.extendleft(reversed(items))  # back in front, in their order
                self._drops.put_back(reports)
                return

    def _full(self) -> bool:
        if not self.keeper.enabled:
            return self._held_bytes >= self._config.max_memory_bytes
        if self.keeper.spooled_bytes < self._config.max_spool_bytes:
            self._full_warned = False
            return False
        if not self._full_warned:
            self._full_warned = True
            _logger.warning(
                "trackbridge: spool is full (%d bytes); new events wait in memory and are "
                "dropped, counted, past max_buffer_events",
                self.keeper.spooled_bytes,
            )
        return True

    def _store(self, items: list[BufferItem], reports: list[tuple[str, Dropped]]) -> bool:
        """Numbers, serializes and spools ``items`` and ``reports``; False (nothing changed)
        when the spool cannot take them now."""
        spool = self.keeper.writable() if self.keeper.enabled else None
        if self.keeper.enabled and spool is None:
            return False
        with self._lock:
            for run_key in dict.fromkeys([*(i[0] for i in items), *(k for k, _ in reports)]):
                self._runs.setdefault(run_key, RunState(run_key))
        built = build(self._config, self._runs, items, reports)
        ids = [0] * len(built)
        if spool is not None:
            try:
                ids = spool.append([(b.run.key, b.first, b.last, b.payload) for b in built])
            except SpoolError as exc:
                self.keeper.failed(exc)
                return False
            self.keeper.succeeded()
        with self._lock:
            for b, spool_id in zip(built, ids, strict=True):
                b.run.next_seq = b.last + 1
                b.run.ended = b.run.ended or b.ends
                self.stats.events_rejected += b.rejected
                self._drops.lost(b.rejected)
                keep = spool is None or self._held_bytes < self._config.max_memory_bytes
                payload = b.payload if keep else None
                size = len(b.payload)
                b.run.pending.append(
                    Pending(b.first, b.last, payload, size, spool, spool_id, b.report)
                )
                self._held_bytes += size if keep else 0
                self.keeper.spooled_bytes += size if spool is not None else 0
        return True

    def _send_next(self, run: RunState) -> bool:
        """Sends the oldest unacknowledged batch of ``run``; False when it could not."""
        head = run.pending[0]
        try:
            payload = head.load()
        except SpoolError as exc:
            self._lost(run, head, exc)
            return True
        started = time.monotonic()
        try:
            ack = self._publish_with_retries(payload)
        except TransportError as exc:
            self.stats.send_failures += 1
            if exc.retryable:
                _logger.warning("trackbridge: receiver unreachable (%s); will retry", exc)
                return False
            # The receiver refused the batch itself: resending cannot help. The writer validates
            # everything before it is buffered, so this means a protocol mismatch.
            _logger.error(
                "trackbridge: receiver rejected events %d-%d of run %s: %s",
                head.first_seq,
                head.last_seq,
                run.key,
                exc,
            )
            self.stats.events_rejected += head.events
            self._drops.lost(head.events)
            self._acknowledge(run, head.last_seq)
            return True
        self.stats.batches_sent += 1
        run.last_contact = time.monotonic()
        self.linger.sent(run.last_contact - started, ack.advised_linger_s)
        if ack.mlflow_run_id:
            run.run_id = ack.mlflow_run_id
            run.experiment_id = ack.mlflow_experiment_id
        self._acknowledge(run, ack.acked_seq)
        return True

    def _lost(self, run: RunState, head: Pending, exc: SpoolError) -> None:
        """A spooled batch that can no longer be read: in its place goes a report of the loss,
        numbered as the batch's last event, so the run's sequence goes on."""
        lost = head.events
        self.stats.events_lost += lost
        _logger.error(
            "trackbridge: events %d-%d of run %s are lost: %s",
            head.first_seq,
            head.last_seq,
            run.key,
            exc,
        )
        dropped = Dropped(
            lost, DROPPED_SPOOL_LOST, head.first_seq, head.last_seq, time.time_ns() // 10**6
        )
        payload = report_batch(self._config, run, head.last_seq, dropped)
        with self._lock:  # the batch's place and spool row, so the accounting stays right
            run.pending[0] = Pending(
                head.last_seq, head.last_seq, payload, head.size, head.spool, head.spool_id, True
            )
            self._held_bytes += len(payload)

    def _acknowledge(self, run: RunState, acked_seq: int) -> None:
        done: dict[Spool, list[int]] = {}
        with self._lock:
            while run.pending and run.pending[0].last_seq <= acked_seq:
                p = run.pending.popleft()
                self.stats.events_acked += p.events
                if p.payload is not None:
                    self._held_bytes -= len(p.payload)
                if p.spool is not None:
                    done.setdefault(p.spool, []).append(p.spool_id)
                    self.keeper.spooled_bytes -= p.size
            run.acked_seq = max(run.acked_seq, acked_seq)
            finished = run.ended and not run.pending
        for spool, ids in done.items():
            spool.remove(ids, {run.key: run.acked_seq})
            if finished:
                spool.forget_run(run.key)

    def _publish_with_retries(self, payload: bytes) -> ingest_pb2.Ack:
        def give_up(state: tenacity.RetryCallState) -> bool:
            return (
                (state.seconds_since_start or 0.0) >= _RETRY_WINDOW_S
                or time.monotonic() >= self._deadline
                or self._interrupt.is_set()
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, TransportError) and e.retryable
            ),
            wait=self._wait,
            stop=give_up,
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._publish, payload)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        # Exponential backoff with jitter, but never sooner than the receiver asked for.
        exc = state.outcome.exception() if state.outcome is not None else None
        hint = exc.retry_after_s if isinstance(exc, TransportError) else 0.0
        return max(float(self._backoff(state)), hint)

    def _publish(self, payload: bytes) -> ingest_pb2.Ack:
        remaining = self._deadline - time.monotonic()
        # Serialized messages concatenate as a merge: the report rides on the spooled bytes as
        # they are, stamped now (the receiver's live view shows the client's backlog).
        report = events_pb2.EventBatch(
            client_pending_events=self.pending_events(),
            client_spool_bytes=self.keeper.spooled_bytes,
        ).SerializeToString()
        return self._transport.publish(payload + report, min(self._config.rpc_timeout_s, remaining))

    def _sleep(self, seconds: float) -> None:
        # While backing off, keep moving the loop's events into the spool, so that a long
        # outage fills the disk (bounded) rather than the buffer.
        end = min(time.monotonic() + seconds, self._deadline)
        while (left := end - time.monotonic()) > 0:
            if self._interrupt.wait(min(left, self._config.linger_s)):
                return
            self._take_buffered()
