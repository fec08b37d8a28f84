"""What the MLflow-compatible layers know of one run of this process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bridge.events import RunStatus
from client_sdk.writer import RunHandle


def now_ms() -> int:
    """Wall-clock milliseconds, as MLflow stamps metrics and runs."""
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class RunRecord:
    """A run this process started (or resumed), as the client knows it."""

    handle: RunHandle
    run_name: str
    experiment: str
    """Experiment name; "" is the job's experiment."""
    start_time_ms: int
    parent: RunRecord | None = None
    status: str = RunStatus.RUNNING.value
    end_time_ms: int | None = None
    resumed_id: str = ""
    """The MLflow id it was resumed by (``start_run(run_id=...)`` of an earlier process's run)."""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, object] = field(default_factory=dict)
    """Latest value of each metric."""
    artifacts: dict[str, int] = field(default_factory=dict)
    """Artifact path -> size of the files logged to it."""
    gave_up: bool = False
    experiment_id: str = ""
    """The MLflow experiment id the run was started in, when the caller named one."""
    top_level: bool = False
    """Started with no job parent run (NVFlare's flat runs)."""
    shown_experiment_id: str = ""
    """The experiment id the run was started with, as the caller named it."""

    @property
    def key(self) -> str:
        """The run key: the run's name on the wire, and its id until MLflow's is known."""
        return self.handle.run_key
