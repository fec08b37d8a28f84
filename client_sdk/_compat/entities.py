"""The objects ``client_sdk.mlflow`` returns, shaped like ``mlflow.entities``.

``RunInfo`` reads live from the client's record of the run: ``run_id`` is MLflow's id once the
receiver has reported it (read lazily, with a bounded wait), ``status`` follows ``end_run``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from client_sdk._compat.session import RunRecord, Session


class RunInfo:
    """Metadata of a run: ids, name, status, times."""

    def __init__(self, record: RunRecord, session: Session) -> None:
        self._record = record
        self._session = session

    @property
    def run_id(self) -> str:
        """MLflow's run id; until the receiver reports it (bounded wait), the run's key."""
        return self._session.run_id(self._record)

    @property
    def run_uuid(self) -> str:
        """Deprecated alias of ``run_id``, as in MLflow."""
        return self.run_id

    @property
    def run_name(self) -> str:
        """The run's name (generated like MLflow's when none was given)."""
        return self._record.run_name

    @property
    def experiment_id(self) -> str:
        """MLflow's experiment id once known (read after ``run_id``), else ""."""
        self._session.run_id(self._record)
        return self._session.experiment_id(self._record)

    @property
    def status(self) -> str:
        """RUNNING, FINISHED, FAILED or KILLED."""
        return self._record.status

    @property
    def start_time(self) -> int:
        """Client wall-clock start, in milliseconds."""
        return self._record.start_time_ms

    @property
    def end_time(self) -> int | None:
        """Client wall-clock end, in milliseconds, once ended."""
        return self._record.end_time_ms

    @property
    def user_id(self) -> str:
        """The ``mlflow.user`` tag."""
        return self._record.tags.get("mlflow.user", "")

    @property
    def lifecycle_stage(self) -> str:
        """Always ``active``: the bridge does not delete runs."""
        return "active"

    @property
    def artifact_uri(self) -> str:
        """Where the run's artifacts go, as this client addresses them."""
        return f"trackbridge://{self._session.config.receiver}/runs/{self.run_id}/artifacts"

    def __repr__(self) -> str:
        return (
            f"<RunInfo: run_name={self.run_name!r}, run_key={self._record.key!r},"
            f" status={self.status!r}>"
        )


@dataclass(frozen=True)
class RunData:
    """What the client logged to a run: latest metric values, params, tags."""

    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class Run:
    """A run: ``info`` and ``data`` (what this process logged to it)."""

    def __init__(self, info: RunInfo, data: RunData) -> None:
        self._info = info
        self._data = data

    @property
    def info(self) -> RunInfo:
        """The run's metadata."""
        return self._info

    @property
    def data(self) -> RunData:
        """What this process logged to the run."""
        return self._data

    @property
    def inputs(self) -> None:
        """Dataset inputs are not tracked through the bridge."""
        return None

    @property
    def outputs(self) -> None:
        """Model outputs are not tracked through the bridge."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: info={self._info!r}>"


def run_of(record: RunRecord, session: Session) -> Run:
    """A Run of a record, with the data logged so far."""
    metrics = {k: _plain(v) for k, v in record.metrics.items()}
    data = RunData(metrics, dict(record.params), dict(record.tags))
    return Run(RunInfo(record, session), data)


def _plain(value: object) -> Any:
    return value if isinstance(value, float) else float(value)  # type: ignore[arg-type]


class ActiveRun(Run):
    """The run ``start_run`` returns; as a context manager it ends the run on exit (FINISHED,
    or FAILED when an exception leaves the block, which is then re-raised)."""

    def __init__(self, run: Run, record: RunRecord, on_exit: Callable[[RunRecord, bool], None]):
        super().__init__(run.info, run.data)
        self._record = record
        self._on_exit = on_exit

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        self._on_exit(self._record, exc_type is not None)
        return exc_type is None


@dataclass(frozen=True)
class Experiment:
    """An experiment as the client knows it: addressed by name, with a local id."""

    experiment_id: str
    name: str
    artifact_location: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    lifecycle_stage: str = "active"


class RunOperations:
    """What ``synchronous=False`` calls return: ``wait()`` blocks until the receiver has
    everything logged so far."""

    def __init__(self, flush: Callable[[float], bool]) -> None:
        self._flush = flush

    def wait(self, timeout_s: float = 60.0) -> bool:
        """Waits (bounded) until the receiver has acknowledged the calls; False on timeout."""
        return self._flush(timeout_s)
