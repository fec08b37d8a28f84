"""Accepting batches: dedupe by (run, sequence), durable store, then ack.

A run is its client's: every record here is keyed by the owned key ``<client id>/<run key>``
(see :mod:`server.security.ownership`), so two clients using one run key write two runs.
One thread owns the queue's write connection and commits every batch waiting for it in one
transaction (group commit), so many clients share one fsync.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue as stdqueue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bridge.pb.v1 import events_pb2
from bridge.worker import OnFailure, Worker
from server.ingest.backend import Accepted, NotServing
from server.queue.aggregates import Observed
from server.queue.gaps import GapLog, Noted
from server.queue.sqlite import Backlog, Queue, RunRecord, Stored
from server.security.ownership import SEPARATOR, owned_key

_logger = logging.getLogger(__name__)

_MAX_GROUP = 512


@dataclass(slots=True)
class _Request:
    batch: events_pb2.EventBatch
    key: str
    payload: bytes
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Accepted]


_STOP = object()


class AggregateInputs(Protocol):
    """Records what stored batches bring to the cross-client aggregates, in the transaction
    that stores them (server/aggregate/)."""

    def observe(self, stored: list[tuple[str, events_pb2.EventBatch, int]]) -> Observed:
        """What the batches ``(owned run key, batch, first new sequence)`` bring."""

    def record(self, conn: sqlite3.Connection, seen: Observed) -> None:
        """Writes it, inside the storing transaction."""

    def committed(self, seen: Observed) -> None:
        """The transaction committed."""


class Ingestor:
    """Stores batches durably in the receiver's SQLite queue and answers with the run's
    acknowledged sequence (the embedded :class:`~server.ingest.backend.IngestBackend`)."""

    def __init__(
        self,
        queue: Queue,
        on_stored: Callable[[str, int], None],
        backlog: Backlog,
        gaps: GapLog | None = None,
        aggregates: AggregateInputs | None = None,
    ) -> None:
        self._queue = queue
        self._gaps = gaps
        self._aggregates = aggregates
        self._on_stored = on_stored
        self._backlog = backlog
        self._requests: stdqueue.SimpleQueue[_Request | object] = stdqueue.SimpleQueue()
        self._acked: dict[str, int] = {}
        self._owner: dict[str, str] = {}
        self._mlflow: dict[str, tuple[str, str]] = {}
        for r in queue.runs():
            self._remember(r)
        # FAIL, not restart: the marks, owners and the flusher's and backlog's counts are kept
        # in memory after each commit; after a fault there they cannot be trusted, so the
        # receiver refuses new batches (clients keep them) until it restarts from the queue.
        self.worker = Worker("ingest", self._loop, on_failure=OnFailure.FAIL, failed=self._failed)
        self._lock = threading.Lock()  # submit against a failing worker's drain
        self.last_seen: dict[str, float] = {}
        """owned run key -> monotonic time of the client's last Publish or GetRun for it."""
        self.events_stored = 0
        self.events_duplicate = 0

    def _remember(self, r: RunRecord) -> None:
        self._owner[r.run_key] = r.client_id
        if r.mlflow_run_id:
            self._mlflow[r.run_key] = (r.mlflow_run_id, r.mlflow_experiment_id)
        self._acked[r.run_key] = max(self._acked.get(r.run_key, 0), r.acked_seq)
        if SEPARATOR not in r.run_key:
            # Stored before run keys were scoped: its client's next batches go to the owned
            # key, which carries on from this record's marks (and finds its MLflow run).
            key = owned_key(r.client_id, r.run_key)
            self._acked[key] = max(self._acked.get(key, 0), r.acked_seq)
            if r.mlflow_run_id:
                self._mlflow.setdefault(key, (r.mlflow_run_id, r.mlflow_experiment_id))

    def start(self) -> None:
        """Starts the storing thread."""
        self.worker.start()

    def stop(self, timeout_s: float) -> None:
        """Stores what was submitted, then stops the thread."""
        self._requests.put(_STOP)
        self.worker.stop(time.monotonic() + timeout_s)

    def set_mlflow_run(self, key: str, run_id: str, experiment_id: str) -> None:
        """Lets later acks tell the client its MLflow run id (called by the flusher)."""
        self._mlflow[key] = (run_id, experiment_id)

    def owner(self, key: str) -> str | None:
        """The client a run (by owned key) belongs to, None while none of it is stored."""
        return self._owner.get(key)

    def mlflow_run_id(self, key: str) -> str:
        """The MLflow run id of a run, "" until the flusher has created (or found) it."""
        return self._mlflow.get(key, ("", ""))[0]

    def lookup(self, key: str) -> Accepted:
        """What the receiver has of a run, by owned key (zeros and empty ids when unknown)."""
        if key in self._owner:
            self.last_seen[key] = time.monotonic()
        run_id, exp_id = self._mlflow.get(key, ("", ""))
        return Accepted(self._acked.get(key, 0), run_id, exp_id)

    def submit(
        self, batch: events_pb2.EventBatch, key: str, payload: bytes
    ) -> asyncio.Future[Accepted]:
        """Queues a validated batch (its owned run key, its wire bytes) for storing; the future
        resolves once it is durable."""
        self.last_seen[key] = time.monotonic()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Accepted] = loop.create_future()
        with self._lock:
            if self.worker.failure:
                future.set_exception(self._refusal())
            else:
                self._requests.put(_Request(batch, key, payload, loop, future))
        return future

    def _refusal(self) -> NotServing:
        return NotServing(
            f"the receiver's {self.worker.name} worker failed ({self.worker.failure}); it takes"
            " no batches until it is restarted (keep them and retry)"
        )

    def _failed(self, worker: Worker) -> None:
        """Refuses what waits for the failed thread, and every later batch (in submit)."""
        with self._lock:
            while True:
                try:
                    item = self._requests.get_nowait()
                except stdqueue.Empty:
                    return
                if isinstance(item, _Request):
                    item.loop.call_soon_threadsafe(_resolve, item.future, self._refusal())

    def _loop(self, worker: Worker) -> None:
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

    def _aggregate_inputs(
        self, fresh: list[tuple[str, events_pb2.EventBatch, int]]
    ) -> tuple[Observed | None, Callable[[sqlite3.Connection], None] | None]:
        """What the batches bring to the aggregates, and its write for the storing
        transaction (None, None when there is nothing to record)."""
        if self._aggregates is None or not fresh:
            return None, None
        seen = self._aggregates.observe(fresh)
        if not seen:
            return None, None
        return seen, functools.partial(self._aggregates.record, seen=seen)

    def _store(self, group: list[_Request]) -> None:
        rows: list[Stored] = []
        outcomes: list[Accepted | Exception] = []
        acked = dict(self._acked)  # a failed commit must leave the marks as they were
        owners: dict[str, str] = {}
        noted = Noted()  # sequence gaps and clients' loss reports (server/queue/gaps.py)
        fresh: list[tuple[str, events_pb2.EventBatch, int]] = []
        seen: Observed | None = None
        for req in group:
            b, key = req.batch, req.key
            owners[key] = b.client_id
            mark = acked.get(key, 0)
            last = b.first_seq + len(b.events) - 1
            if last > mark:
                noted.see(key, b, mark)
                first, payload = b.first_seq, req.payload
                if first <= mark:  # a partial resend: keep only the unseen tail
                    tail = events_pb2.EventBatch(
                        client_id=b.client_id,
                        job=b.job,
                        run_key=b.run_key,
                        first_seq=mark + 1,
                        experiment=b.experiment,
                        experiment_id=b.experiment_id,
                    )
                    tail.events.extend(b.events[mark + 1 - first :])
                    first, payload = mark + 1, tail.SerializeToString()
                rows.append(
                    (key, b.client_id, b.job, first, last, payload, b.experiment, b.experiment_id)
                )
                fresh.append((key, b, first))
                acked[key] = last
            else:
                self.events_duplicate += len(b.events)
            run_id, exp_id = self._mlflow.get(key, ("", ""))
            outcomes.append(Accepted(acked.get(key, mark), run_id, exp_id))
        try:
            if noted and self._gaps is not None:
                self._gaps.record(noted)  # first: a retried batch records its gap once
            seen, also = self._aggregate_inputs(fresh)
            if rows:
                self._queue.store(rows, also)
        except Exception as exc:
            _logger.exception("storing %d batches failed", len(rows))
            outcomes = [exc] * len(group)
        else:
            self._acked = acked
            self._owner.update(owners)
        try:
            if not isinstance(outcomes[0], Exception):
                self._after_commit(seen, rows)
        finally:
            # Durable is durable: the clients hear so even when a callback failed (its
            # exception then fails the worker, which refuses later batches).
            for req, outcome in zip(group, outcomes, strict=True):
                req.loop.call_soon_threadsafe(_resolve, req.future, outcome)

    def _after_commit(self, seen: Observed | None, rows: list[Stored]) -> None:
        """Tells the aggregates, the backlog and the flusher what the commit stored."""
        if seen is not None and self._aggregates is not None:
            self._aggregates.committed(seen)
        for run_key, _c, _j, first, last, *_ in rows:
            self.events_stored += last - first + 1
            self._backlog.add(last - first + 1)
            self._on_stored(run_key, last - first + 1)


def _resolve(future: asyncio.Future[Accepted], outcome: Accepted | Exception) -> None:
    if future.done():  # the caller went away (deadline, cancel); the batch is stored anyway
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
