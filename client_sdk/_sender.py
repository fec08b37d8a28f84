"""The background sender: drains the writer's buffer, batches per run, sends, and keeps what
is not yet acknowledged."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import tenacity

from bridge.convert import event_to_proto
from bridge.events import Event, RunEnd
from bridge.pb.v1 import events_pb2, ingest_pb2
from client_sdk._transport import Transport, TransportError
from client_sdk.config import WriterConfig

_logger = logging.getLogger(__name__)

# A single batch larger than this is split before sending (gRPC's default limit is 4 MiB).
_MAX_BATCH_BYTES = 2 * 1024 * 1024
# How long one run's batch is retried before the sender returns to its tick (and tries again).
_RETRY_WINDOW_S = 30.0


@dataclass(slots=True)
class RunState:
    """What the sender knows of one run."""

    key: str
    next_seq: int = 1
    pending: deque[tuple[int, Event]] = field(default_factory=deque)
    """Events with their sequence numbers, sent or not, that the receiver has not acked."""
    acked_seq: int = 0
    run_id: str = ""
    experiment_id: str = ""
    ended: bool = False


@dataclass(slots=True)
class SenderStats:
    """Counters of the sender's work, for status reports and tests."""

    batches_sent: int = 0
    events_acked: int = 0
    send_failures: int = 0
    events_rejected: int = 0
    cycle_errors: int = 0


class Sender:
    """Owns the thread that moves buffered events to the receiver."""

    def __init__(
        self, config: WriterConfig, buffer: deque[tuple[str, Event]], transport: Transport
    ) -> None:
        self._config = config
        self._buffer = buffer
        self._transport = transport
        self._runs: dict[str, RunState] = {}
        self._lock = threading.Lock()
        self._cycled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self.stats = SenderStats()

    # -- called from the writer's threads -------------------------------------------------

    def start(self) -> None:
        """Starts the sender thread (once)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._loop, name="trackbridge-sender", daemon=True
                )
                self._thread.start()

    def wake(self) -> None:
        """Asks for a send now rather than at the end of the linger time."""
        self._wake.set()

    def run_state(self, run_key: str) -> RunState | None:
        """The sender's view of a run (its MLflow id once the receiver has sent it)."""
        with self._lock:
            return self._runs.get(run_key)

    def pending_events(self) -> int:
        """Events logged but not yet acknowledged by the receiver."""
        with self._lock:
            return len(self._buffer) + sum(len(r.pending) for r in self._runs.values())

    def lookup_run_id(self, run_key: str, timeout_s: float) -> str:
        """Asks the receiver for a run's MLflow id; "" if it has none yet or is unreachable."""
        try:
            ack = self._transport.get_run(self._config.client_id, run_key, timeout_s)
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
            while self._buffer or any(r.pending for r in self._runs.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.set()
                self._cycled.wait(min(remaining, self._config.linger_s))
        return True

    def close(self, timeout_s: float) -> int:
        """Drains within ``timeout_s``, stops the thread; returns events left unacknowledged."""
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=max(0.0, self._deadline - time.monotonic()) + 1.0)
            if thread.is_alive():
                self._interrupt.set()
                thread.join(timeout=1.0)
        self._transport.close()
        left = self.pending_events()
        if left:
            _logger.warning("trackbridge: %d events were not delivered before close", left)
        return left

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's thread, channel and events."""
        self._lock = threading.Lock()
        self._cycled = threading.Condition(self._lock)
        self._thread = None
        self._runs.clear()
        self._transport = Transport(self._config.receiver, self._config.rpc_timeout_s)

    # -- the sender thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._config.linger_s)
            self._wake.clear()
            try:
                self._cycle()
            except Exception:
                self.stats.cycle_errors += 1
                _logger.exception("trackbridge sender cycle failed; retrying on the next tick")
            with self._cycled:
                self._cycled.notify_all()
                done = not self._buffer and not any(r.pending for r in self._runs.values())
            if self._stop.is_set() and (done or time.monotonic() >= self._deadline):
                return

    def _cycle(self) -> None:
        self._take_buffered()
        for run in list(self._runs.values()):
            while run.pending and time.monotonic() < self._deadline:
                if not self._send_next(run):
                    break

    def _take_buffered(self) -> None:
        buffer = self._buffer
        with self._lock:
            for _ in range(len(buffer)):
                run_key, event = buffer.popleft()
                run = self._runs.get(run_key)
                if run is None:
                    run = self._runs[run_key] = RunState(run_key)
                run.pending.append((run.next_seq, event))
                run.next_seq += 1
                if isinstance(event, RunEnd):
                    run.ended = True

    def _send_next(self, run: RunState) -> bool:
        """Sends the oldest unacknowledged batch of ``run``; False when it could not."""
        count = min(len(run.pending), self._config.max_batch_events)
        msg = self._build(run, count)
        while msg.ByteSize() > _MAX_BATCH_BYTES and count > 1:
            count //= 2
            msg = self._build(run, count)
        try:
            ack = self._publish_with_retries(msg)
        except TransportError as exc:
            self.stats.send_failures += 1
            if exc.retryable:
                _logger.warning("trackbridge: receiver unreachable (%s); will retry", exc)
                return False
            # The receiver refused the batch itself: resending cannot help. The writer validates
            # everything before it is buffered, so this means a protocol mismatch.
            _logger.error("trackbridge: receiver rejected %d events: %s", count, exc)
            self.stats.events_rejected += count
            with self._lock:
                for _ in range(count):
                    run.pending.popleft()
            return True
        self.stats.batches_sent += 1
        with self._lock:
            while run.pending and run.pending[0][0] <= ack.acked_seq:
                run.pending.popleft()
                self.stats.events_acked += 1
            run.acked_seq = max(run.acked_seq, ack.acked_seq)
            if ack.mlflow_run_id:
                run.run_id = ack.mlflow_run_id
                run.experiment_id = ack.mlflow_experiment_id
        return True

    def _build(self, run: RunState, count: int) -> events_pb2.EventBatch:
        msg = events_pb2.EventBatch(
            client_id=self._config.client_id,
            job=self._config.job,
            run_key=run.key,
            first_seq=run.pending[0][0],
        )
        add = msg.events.add
        pending = run.pending
        for i in range(count):
            event_to_proto(pending[i][1], add())
        return msg

    def _publish_with_retries(self, msg: events_pb2.EventBatch) -> ingest_pb2.Ack:
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
            wait=tenacity.wait_exponential_jitter(
                initial=0.05, max=self._config.retry_max_backoff_s
            ),
            stop=give_up,
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._publish, msg)

    def _publish(self, msg: events_pb2.EventBatch) -> ingest_pb2.Ack:
        remaining = self._deadline - time.monotonic()
        return self._transport.publish(msg, min(self._config.rpc_timeout_s, remaining))

    def _sleep(self, seconds: float) -> None:
        self._interrupt.wait(min(seconds, max(0.0, self._deadline - time.monotonic())))
