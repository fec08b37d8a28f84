"""Zero-code mode: an MLflow tracking-store plugin for ``trackbridge://host:port`` URIs.

With ``MLFLOW_TRACKING_URI=trackbridge://aggregator:50551`` an unmodified script that uses the
real ``mlflow`` package logs through the receiver: MLflow's fluent API and ``MlflowClient``
call this store, which appends to the trackbridge Writer and returns (never waiting on the
network), and the artifact repository in ``mlflow_plugin_artifacts`` streams files. Reads
(search, metric history, runs of other processes) are not served; they raise an error naming
the MLflow server the receiver writes to.

This is the only client module (with its artifact twin) that imports mlflow.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from mlflow.entities import Experiment, Metric, Param, Run, RunData, RunInfo, RunStatus, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED, ErrorCode
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.tracking.abstract_store import AbstractStore

from bridge.errors import MlflowException as BridgeMlflowException
from bridge.events import Metric as MetricEvent
from bridge.validation import validate_run_id
from client_sdk._compat.addressing import SCHEME, local_experiment_id, receiver_of
from client_sdk._compat.checks import checked_params, checked_tags, metric_point, missing_tag
from client_sdk._compat.names import random_run_name
from client_sdk._compat.session import RunRecord, Session, now_ms

T = TypeVar("T")

_PARENT_TAG = "mlflow.parentRunId"
_NAME_TAG = "mlflow.runName"
_NOTE_TAG = "mlflow.note.content"
_sessions: dict[str, Session] = {}
_sessions_lock = threading.Lock()


def session_for(receiver: str) -> Session:
    """The process's session for a receiver (shared by the store and the artifact repository)."""
    with _sessions_lock:
        session = _sessions.get(receiver)
        if session is None:
            session = _sessions[receiver] = Session(receiver)
            # MLflow ends the active run at exit with a hook registered before this session's
            # (so it would run after the session closed): end it first, as MLflow would.
            session.exit_hooks.append(_end_active_run)
        return session


def _end_active_run() -> None:
    import mlflow

    mlflow.end_run()


def receiver_from_uri(uri: str) -> str:
    """``host:port`` of a ``trackbridge://host:port[/...]`` URI."""
    receiver = receiver_of(uri.split("/runs/", 1)[0])
    if receiver is None:
        raise MlflowException(f"not a trackbridge URI: {uri!r} (expected trackbridge://host:port)")
    return receiver


def mlflow_error(exc: BridgeMlflowException) -> MlflowException:
    """Our error as MLflow raises it: a server refusal ("CODE: message") as a RestException."""
    prefix = f"{exc.error_code}: "
    if exc.message.startswith(prefix):
        body = {"error_code": exc.error_code, "message": exc.message[len(prefix) :]}
        return RestException(body)  # type: ignore[no-untyped-call]
    return MlflowException(exc.message, error_code=ErrorCode.Value(exc.error_code))


def _checked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except BridgeMlflowException as exc:
        raise mlflow_error(exc) from None


class TrackbridgeStore(AbstractStore):
    """The tracking store behind ``trackbridge://`` tracking URIs."""

    def __init__(self, store_uri: str | None = None, artifact_uri: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._uri = store_uri or ""
        self._session = session_for(receiver_from_uri(self._uri))
        self._experiments: dict[str, str] = {"0": ""}

    # -- what cannot be served ------------------------------------------------------------------

    def _unsupported(self, what: str) -> NoReturn:
        raise MlflowException(self._session.read_error(what), error_code=NOT_IMPLEMENTED)

    def search_experiments(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("search_experiments")

    def delete_experiment(self, experiment_id: str) -> NoReturn:
        self._unsupported("delete_experiment")

    def restore_experiment(self, experiment_id: str) -> NoReturn:
        self._unsupported("restore_experiment")

    def rename_experiment(self, experiment_id: str, new_name: str) -> NoReturn:
        self._unsupported("rename_experiment")

    def delete_run(self, run_id: str) -> NoReturn:
        self._unsupported("delete_run")

    def restore_run(self, run_id: str) -> NoReturn:
        self._unsupported("restore_run")

    def get_metric_history(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("get_metric_history")

    def _search_runs(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._unsupported("search_runs")

    def link_traces_to_run(self, trace_ids: list[str], run_id: str) -> NoReturn:
        self._unsupported("link_traces_to_run")

    def search_logged_models(self, *args: Any, **kwargs: Any) -> PagedList[Any]:
        # MLflow asks while listing a run's artifacts; no logged model travels the bridge.
        return PagedList([], None)

    def log_inputs(self, run_id: str, datasets: Any = None, models: Any = None) -> None:
        if datasets or models:
            raise MlflowException(
                "dataset and model inputs are not carried by trackbridge; log them with the"
                " real MLflow server",
                error_code=NOT_IMPLEMENTED,
            )

    # -- experiments (addressed by name; created in MLflow with their first run) ----------------

    def _experiment(self, experiment_id: str) -> Experiment:
        name = self._experiments[experiment_id] or self._session.config.job
        return Experiment(experiment_id, name, "", LifecycleStage.ACTIVE, [])

    def create_experiment(
        self, name: str, artifact_location: str | None = None, tags: Any = None
    ) -> str:
        exp_id = local_experiment_id(name)
        self._experiments[exp_id] = name
        return exp_id

    def get_experiment(self, experiment_id: str) -> Experiment:
        if str(experiment_id) not in self._experiments:
            self._unsupported(f"get_experiment({experiment_id!r})")
        return self._experiment(str(experiment_id))

    def get_experiment_by_name(self, experiment_name: str) -> Experiment:
        return self._experiment(self.create_experiment(experiment_name))

    # -- runs -------------------------------------------------------------------------------------

    def _record(self, run_id: str) -> RunRecord:
        record = self._session.find(run_id)
        if record is None and self._session.forked:
            # A forked worker logging to its parent's run: attach to it by MLflow id, under
            # a run key of its own (a run the receiver cannot find is started afresh).
            return self._session.start_run("", resume_run_id=_checked(validate_run_id, run_id))
        if record is None:
            raise RestException(  # type: ignore[no-untyped-call]
                {
                    "error_code": "RESOURCE_DOES_NOT_EXIST",
                    "message": f"Run with id={run_id} not found (trackbridge knows the runs this"
                    " process started)",
                }
            )
        return record

    def create_run(
        self,
        experiment_id: str,
        user_id: str,
        start_time: int,
        tags: Sequence[RunTag],
        run_name: str | None,
    ) -> Run:
        values = {t.key: t.value for t in tags}
        parent_id = values.pop(_PARENT_TAG, None)
        parent = self._record(parent_id) if parent_id else None
        description = values.pop(_NOTE_TAG, "")
        name = run_name or values.get(_NAME_TAG) or random_run_name()
        values[_NAME_TAG] = name
        checked = dict(_checked(checked_tags, values, single=False))
        experiment = self._experiments.get(str(experiment_id))
        if experiment is None:
            self._unsupported(f"create_run in experiment {experiment_id!r}")
        record = self._session.start_run(
            name, experiment=experiment, tags=checked, description=description, parent=parent
        )
        record.start_time_ms = start_time or record.start_time_ms
        if description:
            record.tags[_NOTE_TAG] = description
        self._session.run_id(record)  # a bounded wait for MLflow's id, so scripts print it
        return self._run(record)

    def _run(self, record: RunRecord) -> Run:
        session = self._session
        run_id = session.run_id(record, wait=False)
        info = RunInfo(
            run_id=run_id,
            # The id this store handed out for the experiment (MLflow's fluent API compares it).
            experiment_id=local_experiment_id(record.experiment),
            user_id=record.tags.get("mlflow.user", ""),
            status=record.status,
            start_time=record.start_time_ms,
            end_time=record.end_time_ms,
            lifecycle_stage=LifecycleStage.ACTIVE,
            artifact_uri=f"{SCHEME}{session.config.receiver}/runs/{run_id}/artifacts",
            run_name=record.run_name,
        )
        data = RunData(
            metrics=[
                Metric(k, float(v), 0, 0)  # type: ignore[arg-type]
                for k, v in record.metrics.items()
            ],
            params=[Param(k, v) for k, v in record.params.items()],
            tags=[RunTag(k, v) for k, v in record.tags.items()],
        )
        return Run(info, data)

    def get_run(self, run_id: str) -> Run:
        record = self._session.find(run_id)
        if record is None:
            self._unsupported(f"get_run({run_id!r}) of a run this process did not start")
        return self._run(record)

    def update_run_info(
        self, run_id: str, run_status: Any, end_time: int | None, run_name: str | None
    ) -> RunInfo:
        record = self._record(run_id)
        status = RunStatus.to_string(run_status)
        if status in ("RUNNING", "SCHEDULED"):
            if record.status != "RUNNING" or (run_name and run_name != record.run_name):
                self._session.reopen(record, run_name or "", {}, "")
        else:
            self._session.end_run(record, status)
        return self._run(record).info

    # -- logging (appends to memory and returns) ------------------------------------------------

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric],
        params: Sequence[Param],
        tags: Sequence[RunTag],
    ) -> None:
        record = self._record(run_id)
        now = now_ms()
        points = [
            _checked(
                metric_point,
                m.key,
                m.value,
                m.step,
                m.timestamp,
                now_ms=now,
                prefix=f"metrics[{i}]",
            )
            for i, m in enumerate(metrics)
        ]
        param_map = {p.key: p.value for p in params}
        checked_p = _checked(
            checked_params, record.params, param_map, lambda: run_id, single=False, advice=False
        )
        checked_t = _checked(checked_tags, {t.key: t.value for t in tags}, single=False)
        self._log(record, [m.key for m in metrics], points)
        self._session.log_params(record, checked_p)
        self._session.set_tags(record, checked_t)

    def _log(self, record: RunRecord, keys: list[str], points: list[tuple[Any, int, int]]) -> None:
        enqueue = self._session.writer.enqueue
        for key, (value, step, ts) in zip(keys, points, strict=True):
            record.metrics[key] = value
            enqueue(record.handle, MetricEvent(key, value, step, ts))

    def log_metric(self, run_id: str, metric: Metric) -> None:
        record = self._record(run_id)
        point = _checked(
            metric_point, metric.key, metric.value, metric.step, metric.timestamp, now_ms=now_ms()
        )
        self._log(record, [metric.key], [point])

    def log_param(self, run_id: str, param: Param) -> None:
        record = self._record(run_id)
        checked = _checked(
            checked_params,
            record.params,
            {param.key: param.value},
            lambda: run_id,
            single=True,
            advice=False,
        )
        self._session.log_params(record, checked)

    def set_tag(self, run_id: str, tag: RunTag) -> None:
        record = self._record(run_id)
        self._session.set_tags(record, _checked(checked_tags, {tag.key: tag.value}, single=True))

    def delete_tag(self, run_id: str, key: str) -> None:
        record = self._record(run_id)
        if key not in record.tags and not key.startswith("mlflow.") and not record.resumed_id:
            raise mlflow_error(missing_tag(key, run_id))
        self._session.delete_tag(record, key)
