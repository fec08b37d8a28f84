"""What the flusher knows of each run, shared by its parts (writing, leases, the cycle)."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

from bridge.convert import event_from_proto
from bridge.events import RunStart, RunStatus
from bridge.pb.v1 import events_pb2
from server.flush.sink import RunRef
from server.queue.sqlite import Queue, RunRecord


@dataclass(slots=True)
class FlushStats:
    """Counters of the flusher's work."""

    events_flushed: int = 0
    log_batch_calls: int = 0
    dead_letters: int = 0
    mlflow_errors: int = 0
    cycles: int = 0
    metric_points_written: int = 0
    """Metric points in log_batch calls MLflow accepted (resent ones included)."""
    recovered_events: int = 0
    """Events of a call in flight at the last stop that had reached MLflow: not sent again."""
    quarantined_runs: int = 0
    held_events: int = 0
    """Events quarantined runs hold back."""

    def add(self, **counts: int) -> None:
        """Adds to counters; safe from the pool's writer threads (a bare ``+=`` is not)."""
        with _COUNTING:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)


_COUNTING = threading.Lock()


class Runs:
    """The flusher's view of the runs: records, MLflow runs, statuses, quarantines."""

    def __init__(self, queue: Queue) -> None:
        self._queue = queue
        records = queue.runs()
        self.records = {r.run_key: r for r in records}
        self.status = {r.run_key: r.status for r in records}
        self.refs = {
            r.run_key: RunRef(r.mlflow_run_id, r.mlflow_experiment_id)
            for r in records
            if r.mlflow_run_id
        }
        self.quarantined = {r.run_key: r.quarantine for r in records if r.quarantine}
        self.recovering = {r.run_key for r in records if r.inflight}
        """Runs with a log_batch call in flight when the receiver last stopped."""
        self.held = {r.run_key: 0 for r in records if r.quarantine}
        """Events each quarantined run holds, as last counted."""

    def record(self, run_key: str) -> RunRecord:
        """A run's record (read again from the queue when the run is new)."""
        record = self.records.get(run_key)
        if record is None:
            record = self.reload(run_key)
        return record

    def reload(self, run_key: str) -> RunRecord:
        """Reads a run's record again (its MLflow ids may have been reset by a replay)."""
        record = self._queue.run(run_key)
        if record is None:
            raise KeyError(f"run {run_key} is not in the queue")
        self.records[run_key] = record
        self.status.setdefault(run_key, record.status)
        if record.mlflow_run_id:
            self.refs[run_key] = RunRef(record.mlflow_run_id, record.mlflow_experiment_id)
        else:
            self.refs.pop(run_key, None)
        return record

    def set_status(self, run_key: str, status: str) -> None:
        """Records the run's MLflow status, in memory and in the queue."""
        self.status[run_key] = status
        self._queue.set_status(run_key, status)

    def saved_start(self, run_key: str) -> RunStart | None:
        """The run's start as this receiver wrote it, to create the run again (another store,
        or a run MLflow lost); None when the start went to another receiver."""
        raw = self.record(run_key).start_event
        if not raw:
            return None
        event = event_from_proto(events_pb2.Event.FromString(raw))
        return event if isinstance(event, RunStart) else None

    def keep_start(self, run_key: str, raw: bytes) -> None:
        """Keeps the run's start event (its wire form) in the queue."""
        self._queue.set_run_start(run_key, raw)
        record = self.records.get(run_key)
        if record is not None:
            self.records[run_key] = dataclasses.replace(record, start_event=raw)

    def forget_mlflow(self) -> None:
        """Forgets every MLflow run id (MLflow's store was replaced)."""
        self.refs.clear()
        self.recovering.clear()
        for key, record in list(self.records.items()):
            self.records[key] = dataclasses.replace(
                record, mlflow_run_id="", mlflow_experiment_id="", written_events=0, inflight=""
            )

    def running(self, run_key: str) -> bool:
        """Whether the run is RUNNING as far as the receiver knows."""
        return self.status.get(run_key) == RunStatus.RUNNING.value
