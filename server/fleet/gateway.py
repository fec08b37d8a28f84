"""A receiver of a fleet: validates as ever, then publishes each batch to JetStream.

The receiver keeps no queue of its own. Each batch is split at event boundaries into messages
of at most ``max_message_bytes`` (:func:`server.fleet.subjects.split`), each with the message
id of its run and sequence range, so a retry of a batch, through this receiver or any other,
stores nothing twice. The client is acknowledged only once JetStream has acknowledged the last
message (replicated to a quorum). JetStream down, or without a leader for the moment, is told
to the client as UNAVAILABLE: it keeps the batch in its spool and tries again.

The run registry (KV ``tb_runs``) says whose a run is: the first receiver to see it creates its
record atomically; every receiver checks a batch against it, so a run stays in its job wherever
its batches go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from bridge.pb.v1 import events_pb2
from bridge.worker import Worker
from server.fleet import subjects
from server.fleet.feeder import Feeder
from server.fleet.link import NatsLink
from server.fleet.live import FleetLive
from server.ingest.backend import Accepted, QueueFull, RunRefusedHere

_logger = logging.getLogger(__name__)

_HEARD_EVERY_S = 5.0
_REFRESH_S = 1.0
_STREAM_FULL = 10077  # JetStream: "maximum bytes exceeded" (discard=new)


@dataclass(slots=True)
class _Run:
    client_id: str
    job: str
    run_id: str = ""
    experiment_id: str = ""
    checked_at: float = 0.0


class FleetIngest:
    """The JetStream :class:`~server.ingest.backend.IngestBackend` (with its flusher feed)."""

    def __init__(self, link: NatsLink, feeder: Feeder | None, live: FleetLive) -> None:
        self._link = link
        self._live = live
        self._feeder = feeder
        self._runs: dict[str, _Run] = {}
        self._acked: dict[str, int] = {}
        self._heard: dict[str, float] = {}
        self.last_seen: dict[str, float] = feeder.last_seen if feeder is not None else {}
        self.events_stored = 0
        self.events_duplicate = 0

    @property
    def worker(self) -> Worker:
        """The connection's event loop worker (for health, ``status`` and ``/metrics``)."""
        return self._link.worker

    def start(self) -> None:
        """Starts the flusher feed (the connection is up already)."""
        if self._feeder is not None:
            self._feeder.start()

    def stop(self, timeout_s: float) -> None:
        """Lets the feed hand what it holds to the flusher, then closes the connection."""
        if self._feeder is not None:
            self._feeder.stop(timeout_s)
        self._link.stop()

    def submit(
        self, batch: events_pb2.EventBatch, key: str, payload: bytes
    ) -> asyncio.Future[Accepted]:
        """Publishes a batch; the future resolves once JetStream holds all of it."""
        self.last_seen[key] = time.monotonic()
        return asyncio.wrap_future(self._link.submit(self._publish(batch, key, payload)))

    async def _publish(self, batch: events_pb2.EventBatch, key: str, payload: bytes) -> Accepted:
        run = await self._check_owner(batch, key)
        await self._heard_now(key)
        subject = subjects.subject(key, self._link.config.partitions)
        duplicates = 0
        limit = self._link.config.max_message_bytes
        for first, last, part in subjects.split(batch, payload, limit):
            headers = {
                subjects.MSG_ID: subjects.msg_id(key, first, last),
                subjects.HEADER_SEQ: f"{first}-{last}",
            }
            try:
                ack = await self._link.js.publish(subject, part, headers=headers)
            except APIError as exc:
                if exc.err_code == _STREAM_FULL:
                    raise QueueFull(str(exc)) from exc
                raise
            if ack.duplicate is True:
                duplicates += last - first + 1
            await self._live.accepted(part, last)
        last_seq = batch.first_seq + len(batch.events) - 1
        self._acked[key] = max(self._acked.get(key, 0), last_seq)
        self.events_stored += len(batch.events) - duplicates
        self.events_duplicate += duplicates
        if not run.run_id and time.monotonic() - run.checked_at > _REFRESH_S:
            await self._refresh(key, run)
        return Accepted(self._acked[key], run.run_id, run.experiment_id)

    async def _check_owner(self, batch: events_pb2.EventBatch, key: str) -> _Run:
        run = self._runs.get(key)
        if run is None:
            record = json.dumps({"key": key, "client_id": batch.client_id, "job": batch.job})
            rkey = subjects.run_record_key(key)
            try:
                await self._link.runs.create(rkey, record.encode())
                run = _Run(batch.client_id, batch.job)
            except KeyWrongLastSequenceError:  # known already: through this or another receiver
                entry = await self._link.runs.get(rkey)
                run = _from_record(entry.value or b"{}")
            self._runs[key] = run
        if run.client_id != batch.client_id or run.job != batch.job:
            raise RunRefusedHere(
                f"run {batch.run_key!r} of client {batch.client_id!r} belongs to job {run.job!r}"
                f" (this batch says job {batch.job!r}); start a new run for the new job"
            )
        return run

    async def _refresh(self, key: str, run: _Run) -> None:
        run.checked_at = time.monotonic()
        try:
            entry = await self._link.runs.get(subjects.run_record_key(key))
        except KeyNotFoundError:
            return
        known = _from_record(entry.value or b"{}")
        run.run_id, run.experiment_id = known.run_id, known.experiment_id

    async def _heard_now(self, key: str) -> None:
        now = time.monotonic()
        if now - self._heard.get(key, -1e9) >= _HEARD_EVERY_S:
            self._heard[key] = now
            assert self._link.nc is not None
            try:  # advisory: a full reconnect buffer must not fail the batch
                await self._link.nc.publish(subjects.HEARD_SUBJECT, key.encode())
            except Exception as exc:
                _logger.debug("could not tell the fleet %s was heard: %s", key, exc)

    def lookup(self, key: str) -> Accepted:
        """What the fleet holds of a run: the end of its last stored message, else how far a
        flusher got (a client that comes to this receiver from another one resumes there)."""
        self.last_seen[key] = time.monotonic()
        run = self._runs.get(key)
        if key in self._acked and run is not None and run.run_id:
            # Known here: answered at once (this may be the gRPC loop), the heartbeat sent on.
            self._link.submit(self._heard_now(key))
            return Accepted(self._acked[key], run.run_id, run.experiment_id)
        return self._link.run(self._lookup(key), self._link.config.publish_timeout_s * 2)

    async def _lookup(self, key: str) -> Accepted:
        await self._heard_now(key)
        acked = self._acked.get(key, 0)
        if not acked:
            acked = await self._stored_seq(key)
        run = self._runs.get(key)
        if run is None:
            try:
                entry = await self._link.runs.get(subjects.run_record_key(key))
            except KeyNotFoundError:
                return Accepted(acked, "", "")
            run = self._runs.setdefault(key, _from_record(entry.value or b"{}"))
        if not run.run_id and time.monotonic() - run.checked_at > _REFRESH_S:
            await self._refresh(key, run)
        return Accepted(acked, run.run_id, run.experiment_id)

    async def _stored_seq(self, key: str) -> int:
        seq = 0
        try:
            msg = await self._link.js.get_last_msg(
                subjects.STREAM, subjects.subject(key, self._link.config.partitions)
            )
            seq = int((msg.headers or {}).get(subjects.HEADER_SEQ, "0-0").rpartition("-")[2])
        except NotFoundError:
            pass
        try:
            entry = await self._link.progress.get(subjects.run_record_key(key))
            seq = max(seq, int(entry.value or b"0"))
        except KeyNotFoundError:
            pass
        return seq

    def owner(self, key: str) -> str | None:
        """The client a run belongs to (from the fleet's registry)."""
        run = self._runs.get(key)
        if run is None:
            self.lookup(key)
            run = self._runs.get(key)
        return run.client_id if run is not None else None

    def mlflow_run_id(self, key: str) -> str:
        """The run's MLflow run id, "" until a flusher made it."""
        run = self._runs.get(key)
        if run is None or not run.run_id:
            return self.lookup(key).run_id
        return run.run_id

    def set_mlflow_run(self, key: str, run_id: str, experiment_id: str) -> None:
        """Records the run's MLflow run in the registry, for every receiver's acks."""
        run = self._runs.get(key)
        if run is not None:
            run.run_id, run.experiment_id = run_id, experiment_id
        if run_id:
            self._link.submit(self._record_mlflow_run(key, run_id, experiment_id))

    async def _record_mlflow_run(self, key: str, run_id: str, experiment_id: str) -> None:
        rkey = subjects.run_record_key(key)
        for _ in range(5):
            try:
                entry = await self._link.runs.get(rkey)
            except KeyNotFoundError:
                return
            record = json.loads(entry.value or b"{}")
            if record.get("run_id") == run_id:
                return
            record.update(run_id=run_id, experiment_id=experiment_id)
            try:
                await self._link.runs.update(rkey, json.dumps(record).encode(), last=entry.revision)
                return
            except KeyWrongLastSequenceError:
                continue
            except Exception as exc:  # advisory: the next flush records it again
                _logger.warning("could not record the MLflow run of %s: %s", key, exc)
                return


def _from_record(value: bytes) -> _Run:
    record = json.loads(value)
    return _Run(
        record.get("client_id", ""),
        record.get("job", ""),
        record.get("run_id", ""),
        record.get("experiment_id", ""),
    )
