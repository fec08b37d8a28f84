"""A restarted receiver's charts: each known client's current run read back, so that the page
shows the same history as before the restart.

What reached MLflow is read from MLflow (``get_metric_history``); what the receiver had
acknowledged but not yet written is read from its queue (the pending batches). Both go to the
hub on its event loop (:meth:`server.live.hub.Hub.restore`), which merges them before whatever
the client sent since the restart. It runs once, on a thread of its own, at start: the page
is up at once and fills in as each run is read.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from bridge.pb.v1 import events_pb2
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restored_runs = 0
        """Runs whose history was handed to the hub."""

    def start(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        """Starts reading; each run's history is handed over through ``call_soon`` (the hub's
        event loop's ``call_soon_threadsafe``)."""
        wanted = self._hub.restorable(MAX_RESTORED_RUNS)
        if not wanted:
            return
        self._thread = threading.Thread(
            target=self._load, args=(wanted, call_soon), name="trackbridge-history", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stops reading (between runs)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _load(
        self, wanted: list[RestoredRun], call_soon: Callable[[Callable[[], None]], object]
    ) -> None:
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(self._tracking_uri)
            conn = open_read_only(self._queue_path)
        except Exception:
            _logger.exception("live view: cannot read the charts' history back")
            return
        try:
            queue = Queue(conn)
            for want in wanted:
                if self._stop.is_set():
                    return
                try:
                    points = _from_mlflow(client, want.mlflow_run_id)
                    keys = [r.run_key for r in self._runs if r.mlflow_run_id == want.mlflow_run_id]
                    _add_pending(points, queue, keys)
                except Exception as exc:  # one run's trouble is that run's only
                    _logger.warning("live view: run %s not read back: %s", want.mlflow_run_id, exc)
                    continue
                call_soon(functools.partial(self._hub.restore, want, points))
                self.restored_runs += 1
            for record in self._runs:  # a job's aggregates: its parent run's metrics
                if record.client_id or self._stop.is_set():
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
                want = RestoredRun(record.job, AGGREGATE_CLIENT, parent)
                call_soon(functools.partial(self._hub.restore, want, points))
                self.restored_runs += 1
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
