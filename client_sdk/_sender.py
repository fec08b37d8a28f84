"""The background sender: drains the writer's buffer into serialized per-run batches, keeps
them (in memory and in the durable spool) until the receiver acks them, and sends them."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

import tenacity

from bridge.events import RunEnd
from bridge.pb.v1 import events_pb2, ingest_pb2
from client_sdk._batches import BufferItem, Pending, RunState, SenderStats, serialize
from client_sdk._transport import Transport, TransportError
from client_sdk.config import WriterConfig
from client_sdk.spool import Spool

_logger = logging.getLogger(__name__)

# How long one batch is retried before the sender goes back to its tick (and tries again).
_RETRY_WINDOW_S = 30.0


class Sender:
    """Owns the thread that moves buffered events to the receiver."""

    def __init__(
        self, config: WriterConfig, buffer: deque[BufferItem], transport: Transport
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
        self._fresh_transport = False
        """Set in a forked child: make a new channel before the first send."""
        self._spool: Spool | None = None
        self._adopted: list[Spool] = []
        self._held_bytes = 0
        self._spooled_bytes = 0
        self._full_warned = False
        # Exponential backoff with jitter, spelled in terms every tenacity >= 8.2 has.
        self._backoff = tenacity.wait_exponential(
            multiplier=0.05, max=config.retry_max_backoff_s
        ) + tenacity.wait_random(0, 0.1)
        self.stats = SenderStats()

    # -- called from the writer's threads -------------------------------------------------

    def start(self) -> None:
        """Opens the spool (adopting a dead predecessor's) and starts the thread, once."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            if self._fresh_transport:
                self._fresh_transport = False
                self._transport = Transport(
                    self._config.receiver, self._config.rpc_timeout_s, self._config.security
                )
            if self._config.spool_dir:
                self._open_spools(Path(self._config.spool_dir))
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
            return len(self._buffer) + sum(r.pending_events() for r in self._runs.values())

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
        """Drains within ``timeout_s``, stops the thread; returns events left unacknowledged
        (they stay in the spool, when there is one, for the next start or ``trackbridge sync``)."""
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
        if thread is None or not thread.is_alive():
            for spool in (self._spool, *self._adopted):
                if spool is not None:
                    spool.close()
        if left:
            where = f"kept in {self._config.spool_dir}" if self._spool else "lost"
            _logger.warning("trackbridge: %d events not delivered before close (%s)", left, where)
        return left

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's thread, channel, spool and events."""
        self._lock = threading.Lock()
        self._cycled = threading.Condition(self._lock)
        self._thread = None
        self._runs.clear()
        for spool in (self._spool, *self._adopted):
            if spool is not None:
                spool.abandon()
        self._spool = None
        self._adopted = []
        self._held_bytes = self._spooled_bytes = 0
        # No gRPC call in a fork handler (it can deadlock the child before exec): the new
        # channel is made when the child first logs.
        self._fresh_transport = True

    # -- the sender thread ----------------------------------------------------------------

    def _open_spools(self, directory: Path) -> None:
        for spool in Spool.orphans(directory, self._config.client_id):
            batches = spool.batches()
            _logger.info("trackbridge: delivering %d batches left in %s", len(batches), spool.path)
            for b in batches:
                run = self._runs.setdefault(b.run_key, RunState(b.run_key, ended=True))
                run.pending.append(Pending(b.first_seq, b.last_seq, None, spool, b.id))
            self._spooled_bytes += spool.size_bytes()
            self._adopted.append(spool)
        self._spool = Spool.create(directory, self._config.client_id)

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
                    return  # the receiver is unreachable: every run would fail alike
        self._heartbeat()

    def _heartbeat(self) -> None:
        """Tells the receiver that quiet open runs are alive, so their lease does not run out."""
        now = time.monotonic()
        for run in list(self._runs.values()):
            if run.ended or run.pending or now - run.last_contact < self._config.heartbeat_s:
                continue
            run.last_contact = now
            try:
                self._transport.get_run(self._config.client_id, run.key, self._config.rpc_timeout_s)
            except TransportError as exc:
                _logger.debug("trackbridge heartbeat for run %s failed: %s", run.key, exc)

    def _take_buffered(self) -> None:
        """Moves buffered events into serialized, spooled batches (unless memory and spool
        are both full: then they wait in the buffer, which drops and counts past its bound)."""
        if self._spool is None and self._held_bytes >= self._config.max_memory_bytes:
            return
        if self._spool is not None and self._spooled_bytes >= self._config.max_spool_bytes:
            if not self._full_warned:
                self._full_warned = True
                _logger.warning(
                    "trackbridge: spool is full (%d bytes); new events wait in memory and are "
                    "dropped, counted, past max_buffer_events",
                    self._spooled_bytes,
                )
            return
        self._full_warned = False
        buffer = self._buffer
        per_run: dict[str, list[BufferItem]] = {}
        for _ in range(len(buffer)):
            item = buffer.popleft()
            per_run.setdefault(item[0], []).append(item)
        if not per_run:
            return
        built: list[tuple[RunState, int, int, bytes]] = []
        with self._lock:
            for run_key, events in per_run.items():
                run = self._runs.get(run_key)
                if run is None:
                    run = self._runs[run_key] = RunState(run_key)
                for payload, count, rejected in serialize(
                    self._config, run_key, run.next_seq, events
                ):
                    self.stats.events_rejected += rejected
                    built.append((run, run.next_seq, run.next_seq + count - 1, payload))
                    run.next_seq += count
                tail = events[-1]
                run.ended = run.ended or (len(tail) == 2 and isinstance(tail[1], RunEnd))
        ids = [0] * len(built)
        if self._spool is not None:
            ids = self._spool.append([(r.key, f, last, p) for r, f, last, p in built])
        with self._lock:
            for (run, first, last, payload), spool_id in zip(built, ids, strict=True):
                keep = self._spool is None or self._held_bytes < self._config.max_memory_bytes
                run.pending.append(
                    Pending(first, last, payload if keep else None, self._spool, spool_id)
                )
                self._held_bytes += len(payload) if keep else 0
                self._spooled_bytes += len(payload) if self._spool is not None else 0

    def _send_next(self, run: RunState) -> bool:
        """Sends the oldest unacknowledged batch of ``run``; False when it could not."""
        head = run.pending[0]
        try:
            ack = self._publish_with_retries(head.load())
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
            self.stats.events_rejected += head.last_seq - head.first_seq + 1
            self._acknowledge(run, head.last_seq)
            return True
        self.stats.batches_sent += 1
        run.last_contact = time.monotonic()
        if ack.mlflow_run_id:
            run.run_id = ack.mlflow_run_id
            run.experiment_id = ack.mlflow_experiment_id
        self._acknowledge(run, ack.acked_seq)
        return True

    def _acknowledge(self, run: RunState, acked_seq: int) -> None:
        done: dict[Spool, list[int]] = {}
        with self._lock:
            while run.pending and run.pending[0].last_seq <= acked_seq:
                p = run.pending.popleft()
                self.stats.events_acked += p.last_seq - p.first_seq + 1
                if p.payload is not None:
                    self._held_bytes -= len(p.payload)
                if p.spool is not None:
                    done.setdefault(p.spool, []).append(p.spool_id)
            run.acked_seq = max(run.acked_seq, acked_seq)
        for spool, ids in done.items():
            spool.remove(ids)
        if self._spool is not None and done:
            self._spooled_bytes = self._spool.size_bytes() + sum(
                s.size_bytes() for s in self._adopted
            )

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
            client_pending_events=self.pending_events(), client_spool_bytes=self._spooled_bytes
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
