"""The queue behind the Ingest service, as one interface with two implementations.

:class:`server.ingest.ingestor.Ingestor` stores batches in the receiver's own SQLite queue
(the default: one receiver); :class:`server.fleet.gateway.FleetIngest` publishes them to a NATS
JetStream cluster that every receiver of a fleet shares (``--queue nats://``). The service,
the tracking API and the artifact relay see only this.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from bridge.pb.v1 import events_pb2
from bridge.worker import Worker


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the receiver acknowledges for one batch."""

    acked_seq: int
    run_id: str
    experiment_id: str


class RunRefusedHere(Exception):
    """The batch's run belongs to someone else (told to the client as PERMISSION_DENIED)."""


class QueueFull(Exception):
    """The shared queue holds all it may (told to the client as RESOURCE_EXHAUSTED)."""


class NotServing(Exception):
    """A worker the batch needs has failed (told to the client as UNAVAILABLE, with the
    reason: it keeps the batch in its spool and retries)."""


class IngestBackend(Protocol):
    """Accepts batches durably and answers what is known of a run (by owned key)."""

    last_seen: dict[str, float]
    """owned run key -> monotonic time its client was last heard (the flusher's run leases)."""
    events_stored: int
    events_duplicate: int

    @property
    def worker(self) -> Worker:
        """The worker whose failure stops ingest (health, ``status``, ``/metrics``)."""

    def start(self) -> None:
        """Starts accepting."""

    def stop(self, timeout_s: float) -> None:
        """Stores what was submitted, then stops."""

    def submit(
        self, batch: events_pb2.EventBatch, key: str, payload: bytes
    ) -> asyncio.Future[Accepted]:
        """Stores a validated batch; the future resolves once it is durable."""

    def lookup(self, key: str) -> Accepted:
        """What is stored of a run (zeros and empty ids when unknown)."""

    def owner(self, key: str) -> str | None:
        """The client a run belongs to, None while none of it is stored."""

    def mlflow_run_id(self, key: str) -> str:
        """The run's MLflow run id, "" until a flusher made (or found) it."""

    def set_mlflow_run(self, key: str, run_id: str, experiment_id: str) -> None:
        """Records the run's MLflow run (called by the flusher)."""
