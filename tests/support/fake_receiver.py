"""An in-memory receiver that fails on command, for the client sender's in-process property
tests: it stands where ``client_sdk._transport.Transport`` stands (``EventTransport``).

It takes batches as the real receiver does (``server/ingest/ingestor.py``): per run a mark,
the last sequence stored; a batch whose last event is at or below the mark is a duplicate (the
ack repeats the mark); a partial resend keeps only the unseen tail; a batch past the mark is
stored even across a gap (the receiver records the gap) and moves the mark to its last event.
Every call first consults a fault schedule (one action per call, in call order; past its end
every call succeeds):

- ``ok``: applied and answered;
- ``unavailable``, ``deadline``, ``exhausted``: refused with that (retryable) code before
  anything is applied (``exhausted`` asks for a pause, as a receiver short of disk does);
- ``lost``: applied, then the answer is lost (DEADLINE_EXCEEDED);
- ``kill``/``kill_after``: the client process dies (:class:`Crash`) before/after the call is
  applied.

Its state is the receiver's: it survives the client's crashes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.convert import event_from_proto
from bridge.events import Event
from bridge.pb.v1 import events_pb2, ingest_pb2
from client_sdk._transport import TransportError

ACTIONS = ("ok", "unavailable", "deadline", "exhausted", "lost", "kill", "kill_after")
_REFUSALS = {
    "unavailable": ("UNAVAILABLE", 0.0),
    "deadline": ("DEADLINE_EXCEEDED", 0.0),
    "exhausted": ("RESOURCE_EXHAUSTED", 0.5),
    "lost": ("DEADLINE_EXCEEDED", 0.0),
}


class Crash(BaseException):
    """The client process died at a call boundary (a kill -9): nothing of it runs on."""


@dataclass
class FakeRun:
    """What the receiver stored of one run."""

    mark: int = 0
    events: dict[int, Event] = field(default_factory=dict)
    """Sequence number -> event, each stored once."""
    resent_differently: list[int] = field(default_factory=list)
    """Sequence numbers resent with a different event than the one stored (never allowed)."""


class FakeReceiver:
    """Takes batches by (run, sequence) as the receiver does; fails on command."""

    def __init__(self, schedule: Sequence[str] = (), *, hang: threading.Event | None = None):
        self.schedule = list(schedule)
        self.calls = 0
        self.runs: dict[str, FakeRun] = {}
        self.timeouts: list[tuple[float, float | None]] = []
        """Every call's (monotonic start, timeout), in order."""
        self._hang = hang
        self._lock = threading.Lock()

    def _action(self, timeout_s: float | None) -> str:
        with self._lock:
            n, self.calls = self.calls, self.calls + 1
            self.timeouts.append((time.monotonic(), timeout_s))
        return self.schedule[n] if n < len(self.schedule) else "ok"

    def _before(self, action: str, timeout_s: float | None) -> None:
        if action == "kill":
            raise Crash
        if action in _REFUSALS and action != "lost":
            if action == "deadline" and self._hang is not None:
                # A receiver that does not answer: the call takes all the time it was given.
                self._hang.wait(timeout_s)
            code, pause_s = _REFUSALS[action]
            raise TransportError(code, "fake", retryable=True, retry_after_s=pause_s)

    @staticmethod
    def _after(action: str) -> None:
        if action == "kill_after":
            raise Crash
        if action == "lost":
            raise TransportError("DEADLINE_EXCEEDED", "fake: answer lost", retryable=True)

    def publish(self, payload: bytes, timeout_s: float | None = None) -> ingest_pb2.Ack:
        """Stores the batch as the receiver would, unless the schedule says otherwise."""
        action = self._action(timeout_s)
        self._before(action, timeout_s)
        ack = self._store(events_pb2.EventBatch.FromString(payload))
        self._after(action)
        return ack

    def get_run(
        self,
        client_id: str,
        run_key: str,
        timeout_s: float | None = None,
        *,
        await_id: bool = False,
    ) -> ingest_pb2.Ack:
        """The run's mark (no MLflow run id here, so ``await_id`` changes nothing)."""
        action = self._action(timeout_s)
        self._before(action, timeout_s)
        with self._lock:
            run = self.runs.get(run_key)
            mark = run.mark if run is not None else 0
        self._after(action)
        return ingest_pb2.Ack(acked_seq=mark)

    def close(self) -> None:
        """Nothing to let go of."""

    def _store(self, batch: events_pb2.EventBatch) -> ingest_pb2.Ack:
        with self._lock:
            run = self.runs.setdefault(batch.run_key, FakeRun())
            for i, msg in enumerate(batch.events):
                seq, event = batch.first_seq + i, event_from_proto(msg)
                if seq > run.mark:
                    run.events[seq] = event
                elif seq in run.events and run.events[seq] != event:
                    run.resent_differently.append(seq)
            run.mark = max(run.mark, batch.first_seq + len(batch.events) - 1)
            return ingest_pb2.Ack(acked_seq=run.mark)
