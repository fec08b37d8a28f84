"""A restarted receiver's charts: each known client's current run read back, so that the page
shows the same history as before the restart.

What reached MLflow is read from MLflow (``get_metric_history``); what the receiver had
acknowledged but not yet written is read from its queue (the pending batches). Both go to the
hub on its event loop (:meth:`server.live.hub.Hub.restore`), which merges them before whatever
the client sent since the restart. It runs once, on a worker of its own, at start: the page
is up at once and fills in as each run is read. A failure of one run's read is that run's
only (a warning); anything else restarts the worker, which goes on after the runs it has
already handed over (each run is handed over once).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from bridge.pb.v1 import events_pb2
from bridge.worker import OnFailure, Worker
from server.live.clients import MAX_KEYS_PER_CLIENT
from server.live.hub import AGGREGATE_CLIENT, Hub, RestoredRun
from server.live.series import Point
from server.queue.schema import open_read_only
from server.queue.sqlite import Queue, RunRecord

_logger = logging.getLogger(__name__)

MAX_RESTORED_RUNS = 500
"""Runs read back at most (the latest known); older clients start with empty charts."""
_PENDING_BATCHES = 10_000


class HistoryLoader:
    """Reads back the charted history of the hub's clients once, at start.

    Args:
        hub: The receiver's hub (its clients' current runs are read).
        runs: The queue's runs.
        tracking_uri: MLflow's tracking URI.
        queue_path: The queue database (read-only here).
    """

    def __init__(
        self, hub: Hub, runs: list[RunRecord], tracking_uri: str, queue_path: Path
    ) -> None:
        self._hub = hub
        self._runs = runs
        self._tracking_uri = tracking_uri
        self._queue_path = queue_path
        self._wanted: list[RestoredRun] = []
        self._call_soon: Callable[[Callable[[], None]], object] = lambda _f: None
        self._done: set[tuple[str, str]] = set()
        """(job, client id) of the runs handed over: a restart skips them."""
        # RESTART: what it reads is in MLflow and the queue; it goes on after what it handed.
        self.worker = Worker("history", self._load, on_failure=OnFailure.RESTART)
        self.restored_runs = 0
        """Runs whose history was handed to the hub."""

    def start(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        """Starts reading; each run's history is handed over through ``call_soon`` (the hub's
        event loop's ``call_soon_threadsafe``)."""
        self._wanted = self._hub.restorable(MAX_RESTORED_RUNS)
        if not self._wanted:
            return
        self._call_soon = call_soon
        self.worker.start()

    def stop(self, timeout_s: float) -> None:
        """Stops reading (between runs)."""
        self.worker.stop(time.monotonic() + timeout_s)

    def _hand(self, want: RestoredRun, points: dict[str, list[Point]]) -> None:
        self._call_soon(functools.partial(self._hub.restore, want, points))
        self._done.add((want.job, want.client_id))
        self.restored_runs += 1

    def _load(self, worker: Worker) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self._tracking_uri)
        conn = open_read_only(self._queue_path)
        try:
            queue = Queue(conn)
            for want in self._wanted:
                if worker.stopping.is_set():
                    return
                if (want.job, want.client_id) in self._done:
                    continue
                try:
                    points = _from_mlflow(client, want.mlflow_run_id)
                    keys = [r.run_key for r in self._runs if r.mlflow_run_id == want.mlflow_run_id]
                    _add_pending(points, queue, keys)
                except Exception as exc:  # one run's trouble is that run's only
                    _logger.warning("live view: run %s not read back: %s", want.mlflow_run_id, exc)
                    continue
                self._hand(want, points)
            for record in self._runs:  # a job's aggregates: its parent run's metrics
                if record.client_id or worker.stopping.is_set():
                    continue
                if (record.job, AGGREGATE_CLIENT) in self._done:
                    continue
                try:
                    parent = _parent_id(client, record.job)
                    if not parent:
                        continue
                    points = _from_mlflow(client, parent)
                    _add_pending(points, queue, [record.run_key])
                except Exception as exc:
                    _logger.warning(
                        "live view: aggregates of %s not read back: %s", record.job, exc
                    )
                    continue
                self._hand(RestoredRun(record.job, AGGREGATE_CLIENT, parent), points)
        finally:
            conn.close()


def _from_mlflow(client: object, run_id: str) -> dict[str, list[Point]]:
    run = client.get_run(run_id)  # type: ignore[attr-defined]
    out: dict[str, list[Point]] = {}
    for key in sorted(run.data.metrics)[:MAX_KEYS_PER_CLIENT]:
        history = client.get_metric_history(run_id, key)  # type: ignore[attr-defined]
        out[key] = [(int(m.step), float(m.value), int(m.timestamp)) for m in history]
    return out


def _parent_id(client: object, job: str) -> str:
    """The MLflow id of the job's parent run (where its aggregates go), "" when none."""
    experiment = client.get_experiment_by_name(job)  # type: ignore[attr-defined]
    if experiment is None:
        return ""
    quoted = job.replace("\\", "\\\\").replace("'", "\\'")
    found = client.search_runs(  # type: ignore[attr-defined]
        [experiment.experiment_id],
        f"tags.`trackbridge.job` = '{quoted}' and tags.`trackbridge.role` = 'parent'",
        max_results=1,
    )
    return str(found[0].info.run_id) if found else ""


def _add_pending(points: dict[str, list[Point]], queue: Queue, run_keys: list[str]) -> None:
    """Adds the metric points of the runs' batches not yet in MLflow."""
    for run_key in run_keys:
        for pending in queue.pending(run_key, _PENDING_BATCHES):
            batch = events_pb2.EventBatch.FromString(pending.payload)
            for event in batch.events:
                if event.WhichOneof("kind") == "metric":
                    m = event.metric
                    if m.key in points or len(points) < MAX_KEYS_PER_CLIENT:
                        points.setdefault(m.key, []).append((m.step, m.value, m.timestamp_ms))
