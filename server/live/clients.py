"""The live hub's record of one client: its counters, runs and charted series, and how an
accepted batch is digested into them."""

from __future__ import annotations

from collections import deque

from bridge.pb.v1 import events_pb2
from server.live.links import run_url
from server.live.model import ClientRow
from server.live.series import Series

TAIL_EVENTS = 64
"""The last events of every batch are always digested: exact latest values and run ends."""
MAX_KEYS_PER_CLIENT = 200
"""Metrics charted per client; more keys are counted and left out of the live view."""
_RATE_SAMPLES = 5
_STATUS_NAMES = {
    events_pb2.RUN_STATUS_RUNNING: "RUNNING",
    events_pb2.RUN_STATUS_FINISHED: "FINISHED",
    events_pb2.RUN_STATUS_FAILED: "FAILED",
    events_pb2.RUN_STATUS_KILLED: "KILLED",
}


class ClientRecord:
    """The hub's mutable record of one (job, client)."""

    def __init__(self, job: str, client_id: str) -> None:
        self.job = job
        self.client_id = client_id
        self.run_key = ""
        self.acked: dict[str, int] = {}
        self.flushed_seq: dict[str, int] = {}
        self.status: dict[str, str] = {}
        self.mlflow: dict[str, tuple[str, str]] = {}
        self.received = 0
        self.acked_total = 0
        self.flushed_total = 0
        self.dead = 0
        self.last_seen: float | None = None
        self.last_seen_ms = 0
        self.client_pending = 0
        self.client_spool = 0
        self.series: dict[str, Series] = {}
        self.keys_dropped = 0
        self.inbox: deque[tuple[events_pb2.EventBatch, int, int]] = deque()
        self.samples: deque[tuple[float, int]] = deque(maxlen=_RATE_SAMPLES)
        self.rate = 0.0

    def ended(self) -> bool:
        """Whether the client's current run has ended (finished, failed, killed)."""
        return self.status.get(self.run_key, "RUNNING") != "RUNNING"

    def switch_run(self, run_key: str, resumed_id: str) -> None:
        """Makes ``run_key`` the client's current run. A run that resumes the current one's
        MLflow run (another process of the same site: Flower starts one per message) continues
        its charts; a new run starts them afresh."""
        current_id = self.mlflow.get(self.run_key, ("", ""))
        self.run_key = run_key
        if resumed_id and current_id[0] in ("", resumed_id):
            self.mlflow.setdefault(run_key, (resumed_id, current_id[1]))
            return
        for series in self.series.values():
            series.clear()

    def backlog(self) -> int:
        """Events acknowledged but not yet in MLflow."""
        return sum(max(0, seq - self.flushed_seq.get(run, 0)) for run, seq in self.acked.items())

    def row(self, connected: bool, mlflow_ui_url: str) -> ClientRow:
        """This client as viewers see it."""
        c = self
        status = c.status.get(c.run_key, "RUNNING")
        if status != "RUNNING":
            state = status.lower()
        else:
            state = "connected" if connected else "disconnected"
        run_id, experiment_id = c.mlflow.get(c.run_key, ("", ""))
        return ClientRow(
            job=c.job,
            client_id=c.client_id,
            run_key=c.run_key,
            connected=connected,
            state=state,
            last_seen_ms=c.last_seen_ms,
            events_per_s=c.rate,
            events_received=c.received,
            events_acked=c.acked_total,
            events_flushed=c.flushed_total,
            dead_letters=c.dead,
            backlog_events=c.backlog(),
            client_pending_events=c.client_pending,
            client_spool_bytes=c.client_spool,
            mlflow_run_id=run_id,
            mlflow_experiment_id=experiment_id,
            mlflow_run_url=run_url(mlflow_ui_url, experiment_id, run_id),
            latest={k: s.latest for k, s in sorted(c.series.items()) if s.latest is not None},
        )

    def digest(  # noqa: PLR0917 - one batch slice and where its results go
        self,
        batch: events_pb2.EventBatch,
        start: int,
        end: int,
        stride: int,
        live_points: int,
        changed: set[str],
    ) -> None:
        """Charts events ``start:end`` of a batch (every ``stride``-th, the tail in full),
        adding the metric keys that changed to ``changed``."""
        client = self
        events = batch.events
        run_key = batch.run_key
        tail = max(start, end - TAIL_EVENTS)
        for index in (*range(start, tail, stride), *range(tail, end)):
            event = events[index]
            kind = event.WhichOneof("kind")
            if kind == "metric":
                m = event.metric
                series = client.series.get(m.key)
                if series is None:
                    if len(client.series) >= MAX_KEYS_PER_CLIENT:
                        client.keys_dropped += 1
                        continue
                    series = client.series[m.key] = Series(live_points)
                series.add(m.step, m.value, m.timestamp_ms)
                changed.add(m.key)
            elif kind == "run_start" and not event.run_start.parent_run_key:
                if client.run_key != run_key:
                    client.switch_run(run_key, event.run_start.resume_run_id)
                client.status[run_key] = "RUNNING"
            elif kind == "run_end":
                client.status[run_key] = _STATUS_NAMES.get(event.run_end.status, "FINISHED")
        if not client.run_key:
            client.run_key = run_key
