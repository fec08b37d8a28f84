"""The live hub: what the receiver knows of every client right now.

The ingest path feeds it on the event loop, after a batch is durably accepted: counters are
updated at once and the batch is queued for digestion, so the hot path does O(1) work. The
flusher feeds it from its own thread (flushed counts, dead letters, MLflow run ids) through a
lock. :meth:`Hub.pump`, called a few times a second by :mod:`server.live.view`, digests the queued
batches into bounded per-metric series (:mod:`server.live.series`) and pushes one coalesced
:class:`Delta` per job to every subscriber: the web page (SSE) and the Watch RPC.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bridge.pb.v1 import events_pb2
from server.live.clients import MAX_KEYS_PER_CLIENT, ClientRecord
from server.live.metrics import flush_histogram
from server.live.model import ClientRow, Delta, Subscription, slice_batch
from server.live.series import Point, Series
from server.queue.sqlite import RunRecord
from server.security.ownership import client_run_key, owned_key

DIGEST_BUDGET = 20_000
"""Events digested per pump; past it the rest of each batch is sampled evenly."""
MAX_CLIENTS = 10_000
"""Clients remembered; past it the longest-silent disconnected ones are forgotten."""
AGGREGATE_CLIENT = "(aggregate)"
"""The client under which the live view shows a job's cross-client aggregates."""
MAX_INBOX_EVENTS = 2_000_000
"""Events waiting for digestion past which new batches are counted but not charted."""


@dataclass(frozen=True, slots=True)
class RestoredRun:
    """A client's current run, to be read back after a restart."""

    job: str
    client_id: str
    mlflow_run_id: str


class Hub:
    """Live state of every client, fed by ingest and the flusher, read by viewers.

    Args:
        live_points: Buckets (points with their min/max envelope) kept per client and metric.
        client_timeout_s: A client not heard from this long is disconnected.
        mlflow_ui_url: Base address of the MLflow UI for run links.
        runs: The receiver's known runs (from its queue), so that a restarted receiver lists
            its clients before they are heard from again.
        clock: Monotonic clock (seconds); a parameter for tests.
    """

    def __init__(
        self,
        *,
        live_points: int,
        client_timeout_s: float,
        mlflow_ui_url: str,
        runs: Iterable[RunRecord] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live_points = live_points
        self.client_timeout_s = client_timeout_s
        self.mlflow_ui_url = mlflow_ui_url
        self._clock = clock
        self._clients: dict[tuple[str, str], ClientRecord] = {}
        self._runs: dict[str, ClientRecord] = {}
        self._changed: dict[ClientRecord, set[str]] = {}
        self._inbox_events = 0
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()  # guards what the flusher thread hands over
        self._flushed: list[tuple[str, int, int]] = []
        self._dead: list[tuple[str, int]] = []
        self._run_ids: list[tuple[str, str, str]] = []
        self.flush_seconds = flush_histogram()
        """Seconds to write one stored batch to MLflow (thread-safe; read by /metrics)."""
        self.wake: Callable[[], None] = lambda: None
        """Called when new data waits for a pump (set by the pump's owner)."""
        # ``_runs`` is keyed by the receiver's owned run keys (what the flusher reports); a
        # client's own records by its run keys, as it sent them.
        # The queue lists runs in the order they were first heard of: a client's last one is
        # its current run; its counters are what the queue holds of all of them.
        for run in runs:
            client = self._client(run.job, run.client_id or AGGREGATE_CLIENT)
            self._runs[run.run_key] = client
            key = client_run_key(run.run_key)
            client.run_key = key
            client.acked[key] = max(client.acked.get(key, 0), run.acked_seq)
            client.flushed_seq[key] = max(client.flushed_seq.get(key, 0), run.flushed_seq)
            client.received += run.acked_seq
            client.acked_total += run.acked_seq
            client.flushed_total += run.flushed_seq
            if run.client_id:  # an aggregate run's queue status is no run's state
                client.status[key] = run.status
            if run.mlflow_run_id:
                client.mlflow[key] = (run.mlflow_run_id, run.mlflow_experiment_id)

    def _client(self, job: str, client_id: str) -> ClientRecord:
        client = self._clients.get((job, client_id))
        if client is None:
            client = self._clients[(job, client_id)] = ClientRecord(job, client_id)
        return client

    # -- ingest side (event loop) --------------------------------------------------------------

    def received(self, batch: events_pb2.EventBatch, acked_seq: int) -> None:
        """Records a batch the receiver has just durably accepted (resends included)."""
        client = self._client(batch.job, batch.client_id)
        run_key = batch.run_key
        self._runs[owned_key(batch.client_id, run_key)] = client
        count = len(batch.events)
        client.received += count
        client.last_seen = self._clock()
        client.last_seen_ms = time.time_ns() // 1_000_000
        if batch.client_pending_events:
            client.client_pending = max(0, batch.client_pending_events - count)
            client.client_spool = batch.client_spool_bytes
        previous = client.acked.get(run_key, 0)
        if acked_seq <= previous:
            return
        client.acked[run_key] = acked_seq
        client.acked_total += acked_seq - previous
        start = max(previous + 1, batch.first_seq) - batch.first_seq
        end = min(acked_seq - batch.first_seq + 1, count)
        if start >= end or self._inbox_events >= MAX_INBOX_EVENTS:
            return
        client.inbox.append((batch, start, end))
        self._inbox_events += end - start
        fresh: events_pb2.EventBatch | None = None
        for sub in self._subs:
            if sub.events and sub.matches(batch.job, batch.client_id):
                if fresh is None:
                    fresh = batch if (start, end) == (0, count) else slice_batch(batch, start, end)
                sub.add_batch(fresh)
        self.wake()

    def aggregated(self, batch: events_pb2.EventBatch) -> None:
        """Shows a job's aggregates (a batch of its aggregate run, server/aggregate/) as the
        job's ``(aggregate)`` client."""
        shown = events_pb2.EventBatch(
            client_id=AGGREGATE_CLIENT,
            job=batch.job,
            run_key=client_run_key(batch.run_key),  # batch.run_key is the owned key
            first_seq=batch.first_seq,
        )
        shown.events.extend(batch.events)
        self.received(shown, batch.first_seq + len(batch.events) - 1)
        self._runs[batch.run_key] = self._client(batch.job, AGGREGATE_CLIENT)

    def heartbeat(self, key: str) -> None:
        """Records that the client of a known run (by owned key) asked about it."""
        client = self._runs.get(key)
        if client is not None:
            client.last_seen = self._clock()
            client.last_seen_ms = time.time_ns() // 1_000_000

    # -- flusher side (its thread) ---------------------------------------------------------------

    def flushed(self, run_key: str, last_seq: int, events: int, seconds: float) -> None:
        """Records that a run's events up to ``last_seq`` reached MLflow (thread-safe)."""
        with self._lock:
            self._flushed.append((run_key, last_seq, events))
        self.flush_seconds.observe(seconds)

    def flushed_elsewhere(self, run_key: str, last_seq: int, events: int) -> None:
        """Records that another receiver of the fleet wrote a run's events up to ``last_seq``
        (thread-safe; its timing is that receiver's to report)."""
        with self._lock:
            self._flushed.append((run_key, last_seq, events))

    def dead_lettered(self, run_key: str, events: int = 1) -> None:
        """Records events MLflow refused for good, or a quarantined run holds (thread-safe)."""
        with self._lock:
            self._dead.append((run_key, events))

    def set_mlflow_run(self, run_key: str, run_id: str, experiment_id: str) -> None:
        """Records the MLflow run of a client run (thread-safe)."""
        with self._lock:
            self._run_ids.append((run_key, run_id, experiment_id))

    # -- viewers (event loop) ----------------------------------------------------------------------

    def subscribe(
        self, job: str = "", client_id: str = "", *, events: bool = False
    ) -> Subscription:
        """A new viewer of one job (or all: ""), optionally one client, optionally raw events."""
        sub = Subscription(job, client_id, events)
        self._subs.append(sub)
        return sub

    def close_viewers(self) -> None:
        """Ends every viewer's stream (the receiver is stopping)."""
        for sub in self._subs:
            sub.close()

    def unsubscribe(self, sub: Subscription) -> None:
        """Forgets a viewer."""
        if sub in self._subs:
            self._subs.remove(sub)

    def jobs(self) -> dict[str, tuple[int, int]]:
        """Every job with its number of clients and of connected clients."""
        out: dict[str, tuple[int, int]] = {}
        now = self._clock()
        for client in self._clients.values():
            total, connected = out.get(client.job, (0, 0))
            out[client.job] = (total + 1, connected + self._connected(client, now))
        return dict(sorted(out.items()))

    def rows(self, job: str = "", client_id: str = "") -> list[ClientRow]:
        """The state of every matching client, sorted by job and client id."""
        now = self._clock()
        return [
            c.row(self._connected(c, now), self.mlflow_ui_url)
            for key, c in sorted(self._clients.items())
            if job in ("", key[0]) and client_id in ("", key[1])
        ]

    def series(self, job: str, metrics: frozenset[str] | None) -> dict[str, dict[str, list[Point]]]:
        """Kept points of a job's clients: ``{client: {key: points}}`` (``metrics`` None: all)."""
        return {
            c.client_id: {
                k: s.points()
                for k, s in sorted(c.series.items())
                if metrics is None or k in metrics
            }
            for (j, _), c in sorted(self._clients.items())
            if j == job
        }

    def envelopes(
        self, job: str, metrics: frozenset[str] | None
    ) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
        """The min/max envelopes of a job's thinned series: ``{client: {key: (lows, highs)}}``."""
        return {
            c.client_id: {
                k: s.envelope()
                for k, s in sorted(c.series.items())
                if s.stride > 1 and (metrics is None or k in metrics)
            }
            for (j, _), c in sorted(self._clients.items())
            if j == job
        }

    def job_backlog(self, job: str) -> int:
        """Events of a job's clients acknowledged but not yet in MLflow."""
        return sum(c.backlog() for (j, _), c in self._clients.items() if j == job)

    def connected_clients(self) -> int:
        """How many clients' runs go on and were heard from within the client timeout."""
        now = self._clock()
        return sum(self._connected(c, now) for c in self._clients.values())

    def client_counters(self) -> list[ClientRow]:
        """Every client's row, with the flusher's latest counts folded in (for /metrics)."""
        self.fold()
        return self.rows()

    def pump(self, *, states_due: bool) -> None:
        """Digests queued batches and pushes one delta per changed job to every subscriber.

        With ``states_due``, rates are updated and every delta carries its job's client rows.
        """
        self.fold()
        restate = self._digest()
        now = self._clock()
        if states_due:
            for client in self._clients.values():
                client.samples.append((now, client.received))
                first_t, first_n = client.samples[0]
                client.rate = (client.received - first_n) / (now - first_t) if now > first_t else 0
            if len(self._clients) > MAX_CLIENTS:
                self._evict(now)
        changed, self._changed = self._changed, {}
        points: dict[str, dict[str, dict[str, list[Point]]]] = {}
        for client, keys in changed.items():
            per_key = {k: client.series[k].take_fresh() for k in keys if k in client.series}
            points.setdefault(client.job, {})[client.client_id] = per_key
        if not self._subs:
            return
        jobs = set(points) | restate
        if states_due:
            watched = {s.job for s in self._subs}
            jobs |= {c.job for c in self._clients.values()} if "" in watched else watched
        for job in sorted(jobs):
            rows = tuple(self.rows(job)) if states_due or job in restate else None
            delta = Delta(job, points.get(job, {}), rows)
            for sub in self._subs:
                if sub.job in ("", job):
                    sub.push(delta)

    def fold(self) -> None:
        """Applies what the flusher handed over since the last call."""
        with self._lock:
            flushed, self._flushed = self._flushed, []
            dead, self._dead = self._dead, []
            run_ids, self._run_ids = self._run_ids, []
        for key, last_seq, events in flushed:
            client = self._runs.get(key)
            if client is not None:
                run_key = client_run_key(key)
                client.flushed_total += events
                client.flushed_seq[run_key] = max(client.flushed_seq.get(run_key, 0), last_seq)
        for key, events in dead:
            client = self._runs.get(key)
            if client is not None:
                client.dead += events
        for key, run_id, experiment_id in run_ids:
            client = self._runs.get(key)
            if client is not None:
                client.mlflow[client_run_key(key)] = (run_id, experiment_id)

    # -- a restarted receiver's history (server/live/history.py) ---------------------------------

    def restorable(self, limit: int) -> list[RestoredRun]:
        """The current MLflow runs of the latest ``limit`` clients that have one."""
        out = []
        for client in self._clients.values():
            run_id = client.mlflow.get(client.run_key, ("", ""))[0]
            if run_id:
                out.append(RestoredRun(client.job, client.client_id, run_id))
        return out[-limit:]

    def restore(self, run: RestoredRun, points: dict[str, list[Point]]) -> None:
        """Puts a client's history read back (``{key: points}``; a job's aggregates as its
        ``(aggregate)`` client) before what came since the restart; viewers get a snapshot."""
        client = self._client(run.job, AGGREGATE_CLIENT) if run.client_id == AGGREGATE_CLIENT else (
            self._clients.get((run.job, run.client_id)))  # fmt: skip
        current = client.mlflow.get(client.run_key, ("", ""))[0] if client else ""
        if client is None or current not in ("", run.mlflow_run_id) or not client.run_key:
            return  # it moved on to another run meanwhile
        for key, restored in points.items():
            live = client.series.get(key)
            if live is None and len(client.series) >= MAX_KEYS_PER_CLIENT:
                continue
            since = live.points() if live is not None else []
            series, known = Series(self.live_points), set(since)
            ordered = sorted(
                dict.fromkeys(p for p in restored if p not in known), key=lambda p: p[2]
            )
            for step, value, timestamp_ms in [*ordered, *since]:
                series.add(step, value, timestamp_ms)
            series.take_fresh()
            client.series[key] = series
        for sub in self._subs:
            if sub.job in ("", run.job):
                sub.request_snapshot()

    # -- internals ---------------------------------------------------------------------------------

    def _connected(self, client: ClientRecord, now: float) -> bool:
        # A client whose run ended is not counted as connected, though it may still be heard
        # from for a moment: it is "finished" (or failed, killed) from its run's end on.
        seen = client.last_seen
        return seen is not None and now - seen < self.client_timeout_s and not client.ended()

    def _digest(self) -> set[str]:
        """Digests the inbox; returns the jobs in which a run started or ended (their rows
        are pushed at once, not at the next state period)."""
        total = self._inbox_events
        if not total:
            return set()
        self._inbox_events = 0
        stride = max(1, math.ceil(total / DIGEST_BUDGET))
        restate = set()
        for client in self._clients.values():
            ended = client.ended()
            while client.inbox:
                batch, start, end = client.inbox.popleft()
                changed = self._changed.setdefault(client, set())
                client.digest(batch, start, end, stride, self.live_points, changed)
            if client.ended() != ended:
                restate.add(client.job)
        return restate

    def _evict(self, now: float) -> None:
        idle = sorted(
            (c.last_seen or 0.0, key)
            for key, c in self._clients.items()
            if not self._connected(c, now)
        )
        for _, key in idle[: len(self._clients) - MAX_CLIENTS]:
            client = self._clients.pop(key)
            self._changed.pop(client, None)
            for run_key in client.acked:
                self._runs.pop(owned_key(client.client_id, run_key), None)
                self._runs.pop(run_key, None)  # a record from before run keys were scoped
