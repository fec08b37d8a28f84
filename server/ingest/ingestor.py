"""Accepting batches: dedupe by (run, sequence), durable store, then ack.

One thread owns the queue's write connection and commits every batch waiting for it in one
transaction (group commit), so many clients share one fsync.
"""

from __future__ import annotations

import asyncio
import logging
import queue as stdqueue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.pb.v1 import events_pb2
from server.queue.gaps import GapLog, Noted
from server.queue.sqlite import Backlog, Queue

_logger = logging.getLogger(__name__)

_MAX_GROUP = 512


class NotOwner(Exception):
    """A batch for a run that belongs to another client."""


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the receiver acknowledges for one batch."""

    acked_seq: int
    run_id: str
    experiment_id: str


@dataclass(slots=True)
class _Request:
    batch: events_pb2.EventBatch
    payload: bytes
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Accepted]


_STOP = object()


class Ingestor:
    """Stores batches durably and answers with the run's acknowledged sequence."""

    def __init__(
        self,
        queue: Queue,
        on_stored: Callable[[str, int], None],
        backlog: Backlog,
        gaps: GapLog | None = None,
    ) -> None:
        self._queue = queue
        self._gaps = gaps
        self._on_stored = on_stored
        self._backlog = backlog
        self._requests: stdqueue.SimpleQueue[_Request | object] = stdqueue.SimpleQueue()
        runs = queue.runs()
        self._acked = {r.run_key: r.acked_seq for r in runs}
        self._owner = {r.run_key: r.client_id for r in runs}
        self._mlflow = {r.run_key: (r.mlflow_run_id, r.mlflow_experiment_id) for r in runs}
        self._thread = threading.Thread(target=self._loop, name="trackbridge-ingest", daemon=True)
        self.last_seen: dict[str, float] = {}
        """run key -> monotonic time of the client's last Publish or GetRun for it."""
        self.events_stored = 0
        self.events_duplicate = 0

    def start(self) -> None:
        """Starts the storing thread."""
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stores what was submitted, then stops the thread."""
        self._requests.put(_STOP)
        self._thread.join(timeout_s)

    def set_mlflow_run(self, run_key: str, run_id: str, experiment_id: str) -> None:
        """Lets later acks tell the client its MLflow run id (called by the flusher)."""
        self._mlflow[run_key] = (run_id, experiment_id)

    def owner(self, run_key: str) -> str | None:
        """The client a run belongs to, None while the receiver has stored none of its events."""
        return self._owner.get(run_key)

    def mlflow_run_id(self, run_key: str) -> str:
        """The MLflow run id of a run, "" until the flusher has created (or found) it."""
        return self._mlflow.get(run_key, ("", ""))[0]

    def lookup(self, client_id: str, run_key: str) -> Accepted:
        """What the receiver has of a run (zeros and empty ids for an unknown run)."""
        owner = self._owner.get(run_key)
        if owner is not None and owner != client_id:
            raise NotOwner(f"run {run_key} belongs to another client")
        if owner is not None:
            self.last_seen[run_key] = time.monotonic()
        run_id, exp_id = self._mlflow.get(run_key, ("", ""))
        return Accepted(self._acked.get(run_key, 0), run_id, exp_id)

    def submit(self, batch: events_pb2.EventBatch, payload: bytes) -> asyncio.Future[Accepted]:
        """Queues a validated batch (and its wire bytes) for storing; the future resolves once
        it is durable."""
        self.last_seen[batch.run_key] = time.monotonic()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        self._requests.put(_Request(batch, payload, loop, future))
        return future

    def _loop(self) -> None:
        while True:
            group: list[_Request] = []
            item = self._requests.get()
            stopping = item is _STOP
            if not stopping:
                group.append(item)  # type: ignore[arg-type]
            while len(group) < _MAX_GROUP:
                try:
                    item = self._requests.get_nowait()
                except stdqueue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                else:
                    group.append(item)  # type: ignore[arg-type]
            if group:
                self._store(group)
            if stopping:
                return

    def _store(self, group: list[_Request]) -> None:
        rows = []
        outcomes: list[Accepted | Exception] = []
        acked = dict(self._acked)  # a failed commit must leave the marks as they were
        owners: dict[str, str] = {}
        noted = Noted()  # sequence gaps and clients' loss reports (server/queue/gaps.py)
        for req in group:
            b = req.batch
            owner = self._owner.get(b.run_key) or owners.get(b.run_key)
            if owner is not None and owner != b.client_id:
                outcomes.append(NotOwner(f"run {b.run_key} belongs to another client"))
                continue
            owners[b.run_key] = b.client_id
            mark = acked.get(b.run_key, 0)
            last = b.first_seq + len(b.events) - 1
            if last > mark:
                noted.see(b, mark)
                first, payload = b.first_seq, req.payload
                if first <= mark:  # a partial resend: keep only the unseen tail
                    tail = events_pb2.EventBatch(
                        client_id=b.client_id, job=b.job, run_key=b.run_key, first_seq=mark + 1
                    )
                    tail.events.extend(b.events[mark + 1 - first :])
                    first, payload = mark + 1, tail.SerializeToString()
                rows.append((b.run_key, b.client_id, b.job, first, last, payload))
                acked[b.run_key] = last
            else:
                self.events_duplicate += len(b.events)
            run_id, exp_id = self._mlflow.get(b.run_key, ("", ""))
            outcomes.append(Accepted(acked.get(b.run_key, mark), run_id, exp_id))
        try:
            if noted and self._gaps is not None:
                self._gaps.record(noted)  # first: a retried batch records its gap once
            if rows:
                self._queue.store(rows)
        except Exception as exc:
            _logger.exception("storing %d batches failed", len(rows))
            outcomes = [exc] * len(group)
        else:
            self._acked = acked
            self._owner.update(owners)
            for run_key, _c, _j, first, last, _p in rows:
                self.events_stored += last - first + 1
                self._backlog.add(last - first + 1)
                self._on_stored(run_key, last - first + 1)
        for req, outcome in zip(group, outcomes, strict=True):
            req.loop.call_soon_threadsafe(_resolve, req.future, outcome)


def _resolve(future: asyncio.Future[Accepted], outcome: Accepted | Exception) -> None:
    if future.done():  # the caller went away (deadline, cancel); the batch is stored anyway
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
