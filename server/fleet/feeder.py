"""A flusher's feed in fleet mode: JetStream's lanes into the flusher's working set.

Every flusher pulls every lane (one durable consumer per lane, one batch of a lane in flight
fleet-wide, so each run's order holds whoever flushes it). A batch it gets goes into its
*working set*, a SQLite queue of the usual kind that the usual flusher writes to MLflow; the
batch is acknowledged to JetStream only once the flusher has written it, and the run's
progress is recorded in KV ``tb_progress`` first. So a flusher (or its machine) that dies
loses nothing: JetStream gives the batch to another flusher after ``ack_wait``, which skips
what the progress says is written (MLflow absorbs the one call that may be written twice).
While a write is under way the batch is kept alive with ``in_progress`` heartbeats, unless
this flusher's MLflow has failed for two ack waits in a row (cut off from it): then the batch
is given back (``nak``), so that a flusher that can reach MLflow writes it; this one writes
its copy too once MLflow answers again (the same points, which MLflow keeps once) and records
its progress only where it is ahead of what the fleet's progress says.

A run MLflow refuses for good is quarantined in the working set as on one receiver
(``trackbridge dead-letters`` on that receiver) and its lane goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from bridge.pb.v1 import events_pb2
from server.fleet import subjects
from server.fleet.link import NatsLink, consumer_name
from server.fleet.live import FleetLive
from server.queue.sqlite import Backlog, Queue
from server.security.ownership import owned_key

_logger = logging.getLogger(__name__)

_POLL_S = 0.02
_FETCH_S = 1.0


class Feeder:
    """Pulls the lanes, hands batches to the flusher, acks them once written."""

    def __init__(
        self,
        link: NatsLink,
        scratch: Queue,
        *,
        on_stored: Callable[[str, int], None],
        flush_soon: Callable[[], None],
        backlog: Backlog,
        live: FleetLive,
        mlflow_failing: Callable[[], bool] = lambda: False,
    ) -> None:
        self._link = link
        self._mlflow_failing = mlflow_failing
        self._live = live
        self._scratch = scratch
        self._on_stored = on_stored
        self._flush_soon = flush_soon
        self._backlog = backlog
        self._stopping = False
        self._stop_by = float("inf")
        self._tasks: list[asyncio.Task[None]] = []
        self.last_seen: dict[str, float] = {}
        """owned run key -> when any receiver of the fleet last heard its client."""
        self.batches_acked = 0

    def start(self) -> None:
        """Starts pulling every lane."""
        self._link.run(self._start(), 10.0)

    async def _start(self) -> None:
        assert self._link.nc is not None
        await self._link.nc.subscribe(subjects.HEARD_SUBJECT, cb=self._heard)
        for lane in range(self._link.config.partitions):
            self._tasks.append(asyncio.create_task(self._lane(lane), name=f"lane-{lane}"))

    def stop(self, timeout_s: float) -> None:
        """Stops pulling; a batch in hand gets ``timeout_s`` to be written and acknowledged
        (else JetStream gives it to another flusher)."""
        self._stopping = True
        self._stop_by = time.monotonic() + timeout_s
        with contextlib.suppress(Exception):
            self._link.run(self._join(), timeout_s + 5.0)

    async def _join(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _heard(self, msg: Msg) -> None:
        key = msg.data.decode()
        self.last_seen[key] = time.monotonic()
        self._live.heard(key)

    async def _lane(self, lane: int) -> None:
        sub = None
        while not self._stopping:
            try:
                if sub is None:
                    sub = await self._link.js.pull_subscribe_bind(
                        consumer_name(lane), subjects.STREAM
                    )
                msgs = await sub.fetch(1, timeout=_FETCH_S)
            except nats.errors.TimeoutError:
                continue  # nothing in this lane
            except Exception as exc:  # no leader for the moment, reconnecting: try again
                _logger.debug("lane %d: fetch failed: %s", lane, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    await self._handle(msg)
                except Exception as exc:  # not acked: JetStream delivers it again
                    _logger.warning("lane %d: a batch waits for its next delivery: %s", lane, exc)
                    await asyncio.sleep(0.5)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        batch = events_pb2.EventBatch.FromString(msg.data)
        key = owned_key(batch.client_id, batch.run_key)
        self.last_seen[key] = time.monotonic()
        last = batch.first_seq + len(batch.events) - 1
        written = await self._progress(key)
        record = self._scratch.run(key)
        mark = max(written, record.acked_seq if record is not None else 0)
        if last > mark:
            self._store(batch, key, msg.data, mark)
        if await self._wait_written(msg, key, last, written):
            self.batches_acked += 1
            record = self._scratch.run(key)
            if record is not None and last > mark:
                run = (record.mlflow_run_id, record.mlflow_experiment_id)
                await self._live.written(key, last, last - max(mark, batch.first_seq - 1), run)

    def _store(self, batch: events_pb2.EventBatch, key: str, payload: bytes, mark: int) -> None:
        first, last = batch.first_seq, batch.first_seq + len(batch.events) - 1
        if first <= mark:  # written (or held) in part already: keep the tail
            tail = events_pb2.EventBatch()
            tail.CopyFrom(batch)
            del tail.events[:]
            tail.first_seq = mark + 1
            tail.events.extend(batch.events[mark + 1 - first :])
            first, payload = mark + 1, tail.SerializeToString()
        exp = (batch.experiment, batch.experiment_id)
        self._scratch.store([(key, batch.client_id, batch.job, first, last, payload, *exp)])
        self._backlog.add(last - first + 1)
        self._on_stored(key, last - first + 1)
        self._flush_soon()

    async def _wait_written(self, msg: Msg, key: str, last: int, written: int) -> bool:
        """Waits until the flusher wrote the run up to ``last``, records it and acks; False
        when stopping first."""
        beat = time.monotonic()
        every_s = self._link.config.ack_wait_s / 3
        failing_since: float | None = None
        give_back_s = 2 * self._link.config.ack_wait_s
        given_back = False
        while written < last:
            record = self._scratch.run(key)
            if record is not None and (record.flushed_seq >= last or record.quarantine):
                written = max(written, record.flushed_seq)
                await self._record_progress(key, written)
                break
            if self._stopping and time.monotonic() > self._stop_by:
                return False
            now = time.monotonic()
            failing_since = (failing_since or now) if self._mlflow_failing() else None
            cut_off = failing_since is not None and now - failing_since >= give_back_s
            if cut_off and not given_back:
                given_back = True
                _logger.warning(
                    "MLflow has failed for %.0f s: giving run %s's batch back to the fleet",
                    now - (failing_since or now),
                    key,
                )
                await msg.nak()
            if not given_back and now - beat >= every_s:
                beat = now
                await msg.in_progress()
            await asyncio.sleep(_POLL_S)
        if not given_back:
            await msg.ack_sync()
        return True

    async def _record_progress(self, key: str, written: int) -> None:
        """Records how far a run got, never lowering it (another flusher may have written
        further while this one was cut off from MLflow)."""
        rkey = subjects.run_record_key(key)
        for _ in range(5):
            try:
                entry = await self._link.progress.get(rkey)
            except KeyNotFoundError:
                try:
                    await self._link.progress.create(rkey, str(written).encode())
                    return
                except KeyWrongLastSequenceError:
                    continue  # made meanwhile: compare with it
            if int(entry.value or b"0") >= written:
                return
            try:
                await self._link.progress.update(rkey, str(written).encode(), last=entry.revision)
                return
            except KeyWrongLastSequenceError:
                continue
        raise RuntimeError(f"the progress of run {key} kept changing under this flusher")

    async def _progress(self, key: str) -> int:
        try:
            entry = await self._link.progress.get(subjects.run_record_key(key))
        except KeyNotFoundError:
            return 0
        return int(entry.value or b"0")
