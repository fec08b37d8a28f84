"""Writing cross-client aggregates: when a group is complete (or its deadline passed), its
statistics go into the queue as a batch of the job's aggregate run, which the flusher writes
to the job's parent run exactly once, like any batch.

A group is a job, a metric key and a round (or a step, for points without a round); its
inputs are each client's latest value for it. It is complete when every expected client has
reported it, and its aggregate is written once: when it is complete, or at its deadline with
the clients it has. Expected are, for the key's first group, the clients of the job with a run
that has started and not ended (a run that never logs the key, such as a federated server's
own, holds back that first group until its deadline); after that, the clients that took part
in an aggregate of the key, whether or not a run of theirs is open at the moment (a Flower
site is a process per message, its run resumed by each), unless their runs failed or were
killed. A client that joins later is not waited for until it has taken part. A point that
comes after the group's aggregate was written (a late client, a value logged again) is
recorded as a late arrival (:func:`server.queue.aggregates.record`): MLflow never holds two
values of one aggregate at one step.

Statistics come from numpy (``mean``, ``min``, ``max``, ``average`` weighted by
``num_examples``) over the values ordered by client id, so that anyone can check them against
numpy on the same inputs. The weighted mean is written only when every point of the group has
a ``num_examples``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import numpy as np

from bridge.pb.v1 import events_pb2
from bridge.worker import OnFailure, Worker
from server.aggregate.config import AggregateConfig
from server.aggregate.observe import Selector, observe
from server.queue import aggregates as table
from server.queue.aggregates import Group, Observed, aggregate_run_key

STATISTICS = ("mean", "min", "max", "count", "weighted_mean")
"""The suffixes of the metrics written per aggregated key: ``<key>/mean``, ..."""


def statistics(points: list[tuple[str, float, int]]) -> dict[str, float]:
    """The statistics of a group's points ``(client_id, value, num_examples)``."""
    values = np.array([p[1] for p in points], dtype=np.float64)
    stats = {
        "mean": float(np.mean(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "count": float(len(points)),
    }
    weights = [p[2] for p in points]
    if all(w > 0 for w in weights):
        stats["weighted_mean"] = float(np.average(values, weights=np.array(weights, np.float64)))
    return stats


class Aggregator:
    """Records the inputs (on the ingest thread) and writes due aggregates (its own thread);
    ``on_stored`` is told of each queued batch (run key, events), ``on_written`` gets it (the
    live view)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        config: AggregateConfig,
        *,
        on_stored: Callable[[str, int], None],
        on_written: Callable[[events_pb2.EventBatch], None] | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._conn = conn
        self._config = config
        self._selected = Selector(config.patterns)
        self._on_stored = on_stored
        self._on_written = on_written
        self._clock_ms = clock_ms
        # RESTART: the groups and their inputs are in the queue's tables and a pass writes
        # each due group in one transaction, so a fresh pass loses nothing.
        self.worker = Worker("aggregate", self._loop, on_failure=OnFailure.RESTART)
        self.aggregates_written = 0
        """Aggregate points queued since start (one per statistic)."""

    # -- ingest side -------------------------------------------------------------------------

    def observe(self, stored: list[tuple[str, events_pb2.EventBatch, int]]) -> Observed:
        """What stored batches bring (called before their transaction)."""
        return observe(self._selected, stored)

    def record(self, conn: sqlite3.Connection, seen: Observed) -> None:
        """Records it inside the ingest transaction."""
        table.record(conn, seen, self._clock_ms())

    def committed(self, seen: Observed) -> None:
        """The ingest transaction committed: look at the groups now."""
        if seen.points or seen.ended:
            self.worker.wake()

    # -- writing ------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the writing thread."""
        self.worker.start()

    def stop(self, timeout_s: float) -> bool:
        """Writes what is due, then stops; True when the thread has ended."""
        return self.worker.stop(time.monotonic() + timeout_s)

    def _loop(self, worker: Worker) -> None:
        tick = min(0.25, self._config.deadline_s / 4)
        while True:
            worker.wait(tick)
            stopping = worker.stopping.is_set()
            # A locked or failing queue raises here: the worker logs it and runs this again.
            self.write_due()
            if stopping:
                return

    def write_due(self) -> int:
        """Queues the aggregates of every group that is due; returns how many groups."""
        conn = self._conn
        now = self._clock_ms()
        deadline_ms = int(self._config.deadline_s * 1000)
        written: list[events_pb2.EventBatch] = []
        groups = 0
        with table.transaction(conn):
            by_job: dict[str, list[tuple[Group, dict[str, float]]]] = {}
            open_by_job: dict[str, set[str]] = {}
            for group in table.due(conn):
                points = table.points(conn, group)
                if group.job not in open_by_job:
                    open_by_job[group.job] = table.open_clients(conn, group.job)
                if not (
                    now - group.first_ms >= deadline_ms
                    or _expected(conn, group, open_by_job[group.job]) <= {p[0] for p in points}
                ):
                    continue
                by_job.setdefault(group.job, []).append((group, statistics(points)))
            stored = []
            for job, ready in by_job.items():
                run_key = aggregate_run_key(job)
                first = table.next_seq(conn, run_key)
                msg = events_pb2.EventBatch(client_id="", job=job, run_key=run_key, first_seq=first)
                for group, stats in ready:
                    for name in STATISTICS:
                        if name in stats:
                            m = msg.events.add().metric
                            m.key, m.value = f"{group.key}/{name}", stats[name]
                            m.step, m.timestamp_ms = group.slot, now
                    table.mark_written(conn, group)
                    groups += 1
                last = first + len(msg.events) - 1
                table.store_batch(
                    conn, run_key, job=job, first=first, last=last, payload=msg.SerializeToString()
                )
                stored.append((run_key, len(msg.events)))
                written.append(msg)
        for run_key, count in stored:
            self.aggregates_written += count
            self._on_stored(run_key, count)
        if self._on_written is not None:
            for item in written:
                self._on_written(item)
        return groups


def _expected(conn: sqlite3.Connection, group: Group, open_clients: set[str]) -> set[str]:
    """The clients ``group`` waits for (see the module docstring)."""
    took_part = table.earlier_reporters(conn, group)
    if not took_part:
        return open_clients
    return took_part - table.failed_clients(conn, group.job)
