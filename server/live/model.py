"""What the live hub hands to viewers: client rows, per-job deltas, subscriptions."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from bridge.pb.v1 import events_pb2
from server.live.series import Point


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot of the receiver's work."""

    events_stored: int
    events_duplicate: int
    events_flushed: int
    batches_rejected: int
    batches_throttled: int
    backlog_events: int
    dead_letters: int
    mlflow_errors: int
    queued_batches: int
    calls_unauthenticated: int = 0
    """Calls refused for a missing, wrong or revoked client token."""
    calls_permission_denied: int = 0
    """Batches refused for claiming another client's id or run."""
    calls_over_in_flight: int = 0
    """Calls refused because the client had too many in flight."""
    batches_rate_limited: int = 0
    """Batches refused because the client was over its rate limit."""
    quarantined_runs: int = 0
    """Runs MLflow refuses for good, held until ``trackbridge dead-letters replay``."""
    held_events: int = 0
    """Events those runs hold back."""
    metric_points_written: int = 0
    """Metric points in log_batch calls MLflow accepted."""
    recovered_events: int = 0
    """Events of the call in flight at the last stop found in MLflow, not sent again."""
    batches_disk_low: int = 0
    """Batches refused while the data directory was below its free-space reserve."""
    disk_free_bytes: int = 0
    """Free space on the data directory at the last check (the queue's reusable pages too)."""
    workers: tuple[tuple[str, str, int], ...] = ()
    """Each background worker's (name, failure or "", restarts) (bridge/worker.py)."""
    artifacts_uploaded: int = 0
    """Artifact files (run files and logged models' files) put in MLflow."""
    artifacts_refused: int = 0
    """Artifact files MLflow refused for good (listed with the reason in ``status``)."""
    artifacts_set_aside: int = 0
    """Artifact files past their retry window, retried on their own schedule."""
    events_damaged: int = 0
    """Stored events lost because their batch failed its checksum (server/queue/checksum.py)."""
    reads_waiting: int = 0
    """Reads through the receiver waiting now for their callers' writes to reach MLflow."""


MAX_QUEUED_DELTAS = 16
"""Deltas a subscriber may fall behind by before it is sent a fresh snapshot instead."""
MAX_QUEUED_EVENTS = 100_000
"""Raw events a subscriber may fall behind by before further ones are dropped and counted."""


@dataclass(frozen=True, slots=True)
class ClientRow:
    """One client as viewers see it (mirrors the ``ClientState`` message of watch.proto)."""

    job: str
    client_id: str
    run_key: str
    connected: bool
    """Heard from within the receiver's client timeout."""
    state: str
    """``connected``, ``disconnected``, or the run's end status in lower case."""
    last_seen_ms: int
    """Receiver wall-clock time of the last batch or heartbeat (0: not since start)."""
    events_per_s: float
    events_received: int
    events_acked: int
    events_flushed: int
    dead_letters: int
    backlog_events: int
    """Acknowledged but not yet in MLflow."""
    client_pending_events: int
    """Unacknowledged on the client, as it last reported."""
    client_spool_bytes: int
    mlflow_run_id: str
    mlflow_experiment_id: str
    mlflow_run_url: str
    latest: dict[str, Point]
    """The latest point of each metric."""


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed in one job since the previous pump."""

    job: str
    points: dict[str, dict[str, list[Point]]]
    """``{client: {metric: points}}``: new points (thinned), the latest one last."""
    clients: tuple[ClientRow, ...] | None
    """Every client of the job when states were due, else None."""


class Subscription:
    """One viewer's queue of deltas (and raw batches, when it asked for events).

    Filled by the hub on the event loop; the viewer waits with :meth:`wait` and drains with
    :meth:`take`. A viewer that falls behind gets ``resync`` (send a snapshot) rather than an
    unbounded queue.
    """

    def __init__(self, job: str, client_id: str, events: bool) -> None:
        self.job = job
        self.client_id = client_id
        self.events = events
        self.resync = True
        self._deltas: deque[Delta] = deque()
        self._batches: list[events_pb2.EventBatch] = []
        self._queued_events = 0
        self._dropped = 0
        self._ready = asyncio.Event()
        self._ready.set()  # the first read is a snapshot
        self.closed = False

    def matches(self, job: str, client_id: str) -> bool:
        """Whether this viewer watches that client."""
        return self.job in ("", job) and self.client_id in ("", client_id)

    def push(self, delta: Delta) -> None:
        """Queues a delta (or, past the bound, asks for a snapshot)."""
        if len(self._deltas) >= MAX_QUEUED_DELTAS:
            self._deltas.clear()
            self.resync = True
        else:
            self._deltas.append(delta)
        self._ready.set()

    def request_snapshot(self) -> None:
        """Sends the viewer a fresh snapshot next (its history changed as a whole)."""
        self._deltas.clear()
        self.resync = True
        self._ready.set()

    def add_batch(self, batch: events_pb2.EventBatch) -> None:
        """Queues newly accepted events (or, past the bound, counts them as dropped)."""
        count = len(batch.events)
        if self._queued_events + count > MAX_QUEUED_EVENTS:
            self._dropped += count
        else:
            self._batches.append(batch)
            self._queued_events += count
        self._ready.set()

    def close(self) -> None:
        """Ends the viewer's stream (the receiver is stopping)."""
        self.closed = True
        self._ready.set()

    async def wait(self, timeout_s: float) -> bool:
        """Waits until something is queued; False when ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            return False
        return True

    def take(self) -> tuple[bool, list[Delta], list[events_pb2.EventBatch], int]:
        """``(resync, deltas, batches, dropped events)`` queued so far; empties the queue."""
        resync, self.resync = self.resync, False
        deltas = list(self._deltas)
        self._deltas.clear()
        batches, self._batches = self._batches, []
        dropped, self._dropped = self._dropped, 0
        self._queued_events = 0
        self._ready.clear()
        return resync, deltas, batches, dropped


def slice_batch(batch: events_pb2.EventBatch, start: int, end: int) -> events_pb2.EventBatch:
    """Events ``start:end`` of a batch, as a batch of their own."""
    out = events_pb2.EventBatch(
        client_id=batch.client_id,
        job=batch.job,
        run_key=batch.run_key,
        first_seq=batch.first_seq + start,
    )
    out.events.extend(batch.events[start:end])
    return out
