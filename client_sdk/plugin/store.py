"""Zero-code mode: an MLflow tracking-store plugin for ``trackbridge://host:port`` URIs.

With ``MLFLOW_TRACKING_URI=trackbridge://aggregator:50551`` an unmodified script that uses the
real ``mlflow`` package logs through the receiver: MLflow's fluent API and ``MlflowClient``
call this store. Logging calls (runs, metrics, params, tags) append to the trackbridge Writer
and return, never waiting on the network; reads, logged models and the other writes go through
the receiver (``_reads.py``, ``_models.py``); what the bridge does not carry raises MLflow's
NOT_IMPLEMENTED with the reason (``_unserved.py``). Every method of MLflow's AbstractStore
thus works or raises an MlflowException saying why.

Why not MLflow's RestStore with its transport replaced: its logged-model calls put ids in URL
paths (a relay would parse REST paths back), ``isinstance(store, RestStore)`` switches on
behaviour meant for an HTTP server (run links printed with its host, server-version probes),
and most training calls go to the Writer or the event stream here anyway. Requests and replies
are still MLflow's own protobuf messages (``mlflow.protos.service_pb2``).

The plugin modules (and ``client_sdk.mlflow`` with mlflow installed) are the only client
modules that import mlflow; none does any work at import (MLflow's ``log_model`` imports them
in a subprocess that captures the model's requirements).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunStatus, RunTag
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.entities.logged_model import LoggedModel
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos import service_pb2 as pb
from mlflow.protos.databricks_pb2 import ErrorCode
from mlflow.store.tracking.abstract_store import AbstractStore

from bridge.errors import MlflowException as BridgeMlflowException
from bridge.events import Metric as MetricEvent
from bridge.validation import validate_run_id
from client_sdk._compat.addressing import DEFAULT_EXPERIMENT_ID, SCHEME, receiver_of
from client_sdk._compat.checks import checked_params, checked_tags, metric_point, missing_tag
from client_sdk._compat.names import random_run_name
from client_sdk._compat.session import RunRecord, Session, now_ms
from client_sdk.plugin._calls import Unreachable, run_uri
from client_sdk.plugin._models import Models
from client_sdk.plugin._reads import Reads
from client_sdk.plugin._unserved import Unserved

T = TypeVar("T")

_PARENT_TAG = "mlflow.parentRunId"
_NAME_TAG = "mlflow.runName"
_NOTE_TAG = "mlflow.note.content"
_sessions: dict[str, Session] = {}
_sessions_lock = threading.Lock()
_options: dict[str, Any] = {}


def configure_sessions(**options: Any) -> None:
    """Sets trackbridge's client options (``client_id``, ``job``, ``rank_zero_only``) for the
    sessions made from now on, and closes the current ones (``client_sdk.mlflow.configure``)."""
    with _sessions_lock:
        _options.update({k: v for k, v in options.items() if v is not None})
        closing = list(_sessions.values())
        _sessions.clear()
    for session in closing:
        session.close()


def session_for(receiver: str) -> Session:
    """The process's session for a receiver (shared by the store, the artifact repository,
    the model registry and ``client_sdk.mlflow``)."""
    with _sessions_lock:
        session = _sessions.get(receiver)
        if session is None:
            session = _sessions[receiver] = Session(receiver, **_options)
            # MLflow ends the active run at exit with a hook registered before this session's
            # (so it would run after the session closed): end it first, as MLflow would.
            session.exit_hooks.append(_end_active_run)
        return session


def _end_active_run() -> None:
    import mlflow

    mlflow.end_run()


def receiver_from_uri(uri: str) -> str:
    """``host:port`` of a ``trackbridge://host:port[/...]`` URI."""
    head = uri[len(SCHEME) :] if uri.startswith(SCHEME) else uri
    receiver = receiver_of(SCHEME + head.split("/", 1)[0]) if uri.startswith(SCHEME) else None
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


class TrackbridgeStore(Unserved, Reads, Models, AbstractStore):
    """The tracking store behind ``trackbridge://`` tracking URIs."""

    def __init__(self, store_uri: str | None = None, artifact_uri: str | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._uri = store_uri or ""
        self._session = session_for(receiver_from_uri(self._uri))
        self._experiments: dict[str, str] = {DEFAULT_EXPERIMENT_ID: ""}
        self._mlflow_ids: set[str] = set()
        self._models: dict[str, tuple[RunRecord | None, LoggedModel]] = {}

    @property
    def session(self) -> Session:
        """The session this store logs through."""
        return self._session

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
        experiment, mlflow_experiment_id = self._run_experiment(str(experiment_id))
        record = self._session.start_run(
            name,
            experiment=experiment,
            tags=checked,
            description=description,
            parent=parent,
            experiment_id=mlflow_experiment_id,
        )
        record.shown_experiment_id = str(experiment_id)
        record.start_time_ms = start_time or record.start_time_ms
        if description:
            record.tags[_NOTE_TAG] = description
        self._session.run_id(record)  # a bounded wait for MLflow's id, so scripts print it
        return self._local_run(record)

    def _run_experiment(self, experiment_id: str) -> tuple[str, str]:
        """(name, MLflow id) a run start names for an experiment id: "0" is the job's; an id
        not seen before is checked with the receiver (MLflow's error if there is none)."""
        if experiment_id == DEFAULT_EXPERIMENT_ID:
            return "", ""
        name = self._experiments.get(experiment_id)
        if name is not None:
            return name, experiment_id if experiment_id in self._mlflow_ids else ""
        with contextlib.suppress(Unreachable):  # else the receiver checks it at the run start
            self.get_experiment(experiment_id)
        return self._experiments.get(experiment_id, ""), experiment_id

    def _local_run(self, record: RunRecord) -> Run:
        session = self._session
        run_id = session.run_id(record, wait=False)
        info = RunInfo(
            run_id=run_id,
            # The id the run was started with (MLflow's fluent API compares it).
            experiment_id=record.shown_experiment_id or record.handle.experiment_id,
            user_id=record.tags.get("mlflow.user", ""),
            status=record.status,
            start_time=record.start_time_ms,
            end_time=record.end_time_ms,
            lifecycle_stage=LifecycleStage.ACTIVE,
            artifact_uri=run_uri(session, run_id),
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

    def update_run_info(
        self, run_id: str, run_status: Any, end_time: int | None, run_name: str | None
    ) -> RunInfo:
        record = self._record(run_id)
        status = RunStatus.to_string(run_status)
        if status in ("RUNNING", "SCHEDULED"):
            if record.status != "RUNNING" or (run_name and run_name != record.run_name):
                self._session.reopen(record, run_name or "", {}, "")
        else:
            # MLflow renames and ends in one call: the name goes first, in the run's stream.
            if run_name and run_name != record.run_name:
                record.run_name = record.handle.run_name = run_name
                self._session.set_tags(record, [(_NAME_TAG, run_name)])  # MLflow renames by it
            if status != record.status or not record.handle.ended:
                self._session.end_run(record, status)
        return self._local_run(record).info

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
        self._log(record, metrics, points)
        self._session.log_params(record, checked_p)
        self._session.set_tags(record, checked_t)

    def _log(
        self, record: RunRecord, metrics: Sequence[Metric], points: list[tuple[Any, int, int]]
    ) -> None:
        enqueue = self._session.writer.enqueue
        linked = []
        for metric, (value, step, ts) in zip(metrics, points, strict=True):
            record.metrics[metric.key] = value
            if metric.model_id or metric.dataset_name or metric.dataset_digest:
                # Tied to a logged model or dataset: MLflow's own message carries that.
                linked.append(
                    pb.Metric(
                        key=metric.key,
                        value=float(value),
                        timestamp=ts,
                        step=step,
                        model_id=metric.model_id,
                        dataset_name=metric.dataset_name,
                        dataset_digest=metric.dataset_digest,
                    )
                )
            else:
                enqueue(record.handle, MetricEvent(metric.key, value, step, ts))
        if linked:
            request = pb.LogBatch(metrics=linked)
            self._session.journal(record, "mlflow.LogBatch", request.SerializeToString())

    def log_metric(self, run_id: str, metric: Metric) -> None:
        record = self._record(run_id)
        point = _checked(
            metric_point, metric.key, metric.value, metric.step, metric.timestamp, now_ms=now_ms()
        )
        self._log(record, [metric], [point])

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
