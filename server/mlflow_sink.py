"""The receiver's only door to MLflow: experiments, runs, batched writes, error triage."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from mlflow.entities import Metric as MlflowMetric
from mlflow.entities import Param as MlflowParam
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from bridge.events import Metric, Param, RunStart, RunStatus, Tag
from bridge.limits import LogBatchChunk

_logger = logging.getLogger(__name__)

TAG_PREFIX = "trackbridge."
TAG_CLIENT_ID = "trackbridge.client_id"
TAG_JOB = "trackbridge.job"
TAG_RUN_KEY = "trackbridge.run_key"
TAG_ROLE = "trackbridge.role"

# MLflow error codes that say "this request will never succeed": everything else is retried.
_PERMANENT_CODES = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE", "BAD_REQUEST"}
)


def is_permanent(exc: BaseException) -> bool:
    """True for MLflow errors that retrying cannot fix (bad or conflicting data)."""
    if isinstance(exc, RestException):
        status: int = exc.get_http_status_code()  # type: ignore[no-untyped-call]
        return exc.error_code in _PERMANENT_CODES and status != 429 and status < 500
    if isinstance(exc, MlflowException):
        if isinstance(exc.__cause__, sqlite3.OperationalError):
            return False  # "database is locked" and friends
        return exc.error_code in _PERMANENT_CODES
    return False


@dataclass(frozen=True, slots=True)
class RunRef:
    """An MLflow run as the receiver addresses it."""

    run_id: str
    experiment_id: str


class MlflowSink:
    """Creates or resumes runs by their trackbridge tags and writes chunks with log_batch."""

    def __init__(self, tracking_uri: str, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri)
        self._artifact_location = artifact_location
        self._experiments: dict[str, str] = {}
        self._parents: dict[str, RunRef] = {}

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        cached = self._experiments.get(name)
        if cached is not None:
            return cached
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            exp_id = str(found.experiment_id)
        else:
            try:
                exp_id = self._client.create_experiment(
                    name, artifact_location=self._artifact_location
                )
            except MlflowException:
                found = self._client.get_experiment_by_name(name)  # another receiver won
                if found is None:
                    raise
                exp_id = str(found.experiment_id)
        self._experiments[name] = exp_id
        return exp_id

    def _find_run(self, experiment_id: str, filter_string: str) -> str | None:
        runs = self._client.search_runs([experiment_id], filter_string, max_results=1)
        return runs[0].info.run_id if runs else None

    def parent_run(self, job: str) -> RunRef:
        """The job's parent run, created or resumed (by its tags)."""
        cached = self._parents.get(job)
        if cached is not None:
            return cached
        exp_id = self.experiment_id(job)
        run_id = self._find_run(
            exp_id, f"tags.`{TAG_JOB}` = '{_quote(job)}' and tags.`{TAG_ROLE}` = 'parent'"
        )
        if run_id is None:
            run_id = self._client.create_run(
                exp_id, run_name=job, tags={TAG_JOB: job, TAG_ROLE: "parent"}
            ).info.run_id
        ref = self._parents[job] = RunRef(run_id, exp_id)
        return ref

    def client_run(self, client_id: str, job: str, run_key: str, start: RunStart | None) -> RunRef:
        """The MLflow run of one client run: resumed by its run-key tag, else created."""
        start = start or RunStart()
        exp_id = self.experiment_id(start.experiment or job)
        parent = self.parent_run(job)
        run_id = self._find_run(exp_id, f"tags.`{TAG_RUN_KEY}` = '{_quote(run_key)}'")
        if run_id is None:
            tags = dict(start.tags)
            tags.update(
                {
                    MLFLOW_PARENT_RUN_ID: parent.run_id,
                    TAG_CLIENT_ID: client_id,
                    TAG_JOB: job,
                    TAG_RUN_KEY: run_key,
                    TAG_ROLE: "client",
                }
            )
            if start.description:
                tags[MLFLOW_RUN_NOTE] = start.description
            run_id = self._client.create_run(
                exp_id,
                start_time=start.start_time_ms or None,
                tags=tags,
                run_name=start.run_name or client_id,
            ).info.run_id
        self._reopen_parent(parent)
        return RunRef(run_id, exp_id)

    def resume_run(self, run: RunRef, job: str) -> None:
        """Sets a run that was ended (e.g. KILLED by its lease) RUNNING again."""
        self._client.update_run(run.run_id, status="RUNNING")
        self._reopen_parent(self.parent_run(job))

    def _reopen_parent(self, parent: RunRef) -> None:
        info = self._client.get_run(parent.run_id).info
        if info.status != "RUNNING":
            self._client.update_run(parent.run_id, status="RUNNING")

    def log(self, run_id: str, chunk: LogBatchChunk) -> None:
        """Writes one chunk with a single synchronous log_batch call."""
        self._client.log_batch(
            run_id,
            metrics=[MlflowMetric(m.key, m.value, m.timestamp_ms, m.step) for m in chunk.metrics],
            params=[MlflowParam(p.key, p.value) for p in chunk.params],
            tags=[RunTag(t.key, t.value) for t in chunk.tags],
            synchronous=True,
        )

    def end_run(self, run: RunRef, job: str, status: RunStatus, end_time_ms: int) -> None:
        """Ends a client run; ends the job's parent run once none of its children runs."""
        self._client.set_terminated(run.run_id, status.value, end_time_ms or None)
        parent = self.parent_run(job)
        running = self._client.search_runs(
            sorted({parent.experiment_id, run.experiment_id}),
            f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.run_id}' and attributes.status = 'RUNNING'",
            max_results=1,
        )
        if not running:
            self._client.set_terminated(parent.run_id, RunStatus.FINISHED.value)

    def entry_error(self, run_id: str, entry: Metric | Param | Tag) -> str | None:
        """Writes one entry alone; returns MLflow's reason if it refuses it for good."""
        chunk = LogBatchChunk(
            (entry,) if isinstance(entry, Metric) else (),
            (entry,) if isinstance(entry, Param) else (),
            (entry,) if isinstance(entry, Tag) else (),
        )
        try:
            self.log(run_id, chunk)
        except Exception as exc:
            if is_permanent(exc):
                return str(getattr(exc, "message", exc))
            raise
        return None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
