"""client_sdk.mlflow without the mlflow package: MLflow's fluent logging calls, trackbridge's own.

``import client_sdk.mlflow as mlflow`` is the only change a training script needs: the calls,
their arguments, return values and errors are MLflow's (3.17), while every call appends to
memory and returns; the receiver owns MLflow. The receiver's address comes from
``set_tracking_uri("trackbridge://host:port")``, ``MLFLOW_TRACKING_URI=trackbridge://...`` or
``TRACKBRIDGE_RECEIVER``. See docs/how-to/zero-code.md for the differences.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import bridge.errors as exceptions
from bridge.errors import INVALID_PARAMETER_VALUE, MlflowException
from bridge.events import RunStatus
from bridge.validation import validate_run_id
from client_sdk._compat import checks
from client_sdk._compat.addressing import NOT_IMPLEMENTED
from client_sdk._compat.checks import checked_tags
from client_sdk._compat.entities import (
    ActiveRun,
    Experiment,
    Run,
    RunData,
    RunInfo,
    run_of,
)
from client_sdk._compat.session import RunRecord
from client_sdk.mlflow._artifacts import (
    log_artifact,
    log_artifacts,
    log_dict,
    log_figure,
    log_image,
    log_stream,
    log_table,
    log_text,
)
from client_sdk.mlflow._logging import (
    delete_tag,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    set_tag,
    set_tags,
)
from client_sdk.mlflow._runs import NOTE_TAG, new_run, resume
from client_sdk.mlflow._state import FLUENT, STATE
from client_sdk.mlflow._system import (
    disable_system_metrics_logging,
    enable_system_metrics_logging,
    set_system_metrics_sampling_interval,
    start_for,
    stop_for,
)

__all__ = [
    "ActiveRun",
    "Experiment",
    "MlflowException",
    "Run",
    "RunData",
    "RunInfo",
    "active_run",
    "configure",
    "create_experiment",
    "delete_tag",
    "disable_system_metrics_logging",
    "enable_system_metrics_logging",
    "end_run",
    "exceptions",
    "federated_round",
    "flush",
    "flush_artifact_async_logging",
    "flush_async_logging",
    "get_artifact_uri",
    "get_experiment_by_name",
    "get_run",
    "get_tracking_uri",
    "last_active_run",
    "log_artifact",
    "log_artifacts",
    "log_dict",
    "log_figure",
    "log_image",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "log_stream",
    "log_table",
    "log_text",
    "set_experiment",
    "set_system_metrics_sampling_interval",
    "set_tag",
    "set_tags",
    "set_tracking_uri",
    "start_run",
]

_state = STATE
_RUN_STATUSES = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]


# -- where to log ----------------------------------------------------------------------------


# The calls both faces of client_sdk.mlflow share (client_sdk/_compat/fluent.py).
set_tracking_uri = FLUENT.set_tracking_uri
get_tracking_uri = FLUENT.get_tracking_uri
configure = FLUENT.configure
federated_round = FLUENT.federated_round
flush = FLUENT.flush
flush_async_logging = FLUENT.flush_async_logging


def flush_artifact_async_logging() -> None:
    """As MLflow's: waits (up to a minute) until the receiver has the artifacts logged."""
    flush(60.0)


# -- experiments -------------------------------------------------------------------------------


def set_experiment(
    experiment_name: str | None = None, experiment_id: str | None = None
) -> Experiment:
    """Makes an experiment active by name (created in MLflow with its first run) or by an id
    this process knows."""
    if (experiment_name is None) == (experiment_id is None):
        raise MlflowException(
            "Must specify exactly one of: `experiment_id` or `experiment_name`.",
            INVALID_PARAMETER_VALUE,
        )
    if experiment_name is not None:
        if not isinstance(experiment_name, str):
            raise MlflowException(
                f"Invalid experiment name: '{experiment_name}'", INVALID_PARAMETER_VALUE
            )
        checks.experiment_name(experiment_name, "experiment_name")
        experiment = _state.register_experiment(experiment_name)
        _state.experiment = experiment_name
        _state.experiment_id = None
        return experiment
    key = str(experiment_id)
    if key in _state.experiments:
        _state.experiment, _state.experiment_id = _state.experiments[key], None
        return _state.experiment_entity(key)
    # An MLflow experiment by id: runs are started in it (the receiver checks that it exists).
    _state.experiment, _state.experiment_id = None, key
    return Experiment(key, "")


def create_experiment(
    name: str, artifact_location: str | None = None, tags: Mapping[str, Any] | None = None
) -> str:
    """Names an experiment and returns its id; MLflow creates it with its first run (where
    the receiver's artifact store decides the artifact location; ``tags`` are not sent)."""
    checks.experiment_name(name, "name")
    return _state.register_experiment(name).experiment_id


def get_experiment_by_name(name: str) -> Experiment | None:
    """The experiment if this process has named it, else None."""
    for exp_id, known in list(_state.experiments.items()):
        if known == name and known:
            return _state.experiment_entity(exp_id)
    return None


# -- runs ----------------------------------------------------------------------------------------


def start_run(  # noqa: PLR0917 - MLflow's signature
    run_id: str | None = None,
    experiment_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    log_system_metrics: bool | None = None,
) -> ActiveRun:
    """Starts a run (or resumes one by ``run_id``) and makes it active; see ``mlflow.start_run``.

    The MLflow run is created by the receiver; ``run.info.run_id`` waits (bounded by
    ``TRACKBRIDGE_RUN_ID_TIMEOUT_S``) for its id the first time it is read.
    """
    stack = _state.stack()
    session = _state.session()
    if stack and not nested:
        raise Exception(  # MLflow raises exactly this
            f"Run with UUID {session.run_id(stack[0], wait=False)} is already active. To start a"
            " new run, first end the current run with mlflow.end_run(). To start a nested run,"
            " call start_run with nested=True"
        )
    if not run_id and os.environ.get("MLFLOW_RUN_ID"):
        run_id = os.environ.pop("MLFLOW_RUN_ID")
    user_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if description and NOTE_TAG in user_tags:
        raise MlflowException(
            f"Description is already set via the tag {NOTE_TAG} in tags.Remove the key"
            f" {NOTE_TAG} from the tags or omit the description.",
            INVALID_PARAMETER_VALUE,
        )
    checked = dict(checked_tags(user_tags, single=False))
    if run_id:
        record = resume(validate_run_id(run_id), run_name, checked, description or "")
    else:
        record = new_run(experiment_id, run_name, nested, parent_run_id, checked, description)
    stack.append(record)
    start_for(session, record, log_system_metrics)
    return ActiveRun(run_of(record, session), record, _exit_run)


def _exit_run(record: RunRecord, failed: bool) -> None:
    if record in _state.stack():
        end_run("FAILED" if failed else "FINISHED")


def end_run(status: str = "FINISHED") -> None:
    """Ends the innermost active run of this thread with ``status``."""
    stack = _state.stack()
    if not stack:
        return
    record = stack.pop()
    stop_for(record)
    _state.last = record
    if status not in _RUN_STATUSES:  # as MLflow: the run leaves the stack, then this
        raise Exception(  # MLflow raises exactly this
            f"Could not get run status corresponding to string {status}. Valid run status"
            f" strings: {_RUN_STATUSES}"
        )
    _state.session().end_run(record, RunStatus.RUNNING.value if status == "SCHEDULED" else status)


def active_run() -> ActiveRun | None:
    """The innermost active run of this thread."""
    stack = _state.stack()
    if not stack:
        return None
    record = stack[-1]
    return ActiveRun(run_of(record, _state.session()), record, _exit_run)


def last_active_run() -> Run | None:
    """The active run, else the run this thread ended last (with what this process logged)."""
    active = active_run()
    if active is not None:
        return active
    record = _state.last
    return run_of(record, _state.session()) if record is not None else None


def get_run(run_id: str) -> Run:
    """A run this process started (with what it logged); other runs are read from MLflow."""
    record = _state.session().find(run_id)
    if record is None:
        raise MlflowException(_state.session().read_error("get_run"), NOT_IMPLEMENTED)
    return run_of(record, _state.session())


def get_artifact_uri(artifact_path: str | None = None) -> str:
    """Where the active run's artifacts go, as this client addresses them."""
    uri = run_of(_run(None), _state.session()).info.artifact_uri
    return f"{uri}/{artifact_path}" if artifact_path else uri


def _auto_start() -> RunRecord:
    start_run()
    return _state.stack()[-1]


_state.auto_start = _auto_start
_run = _state.run


def __getattr__(name: str) -> Any:
    # The rest of MLflow's API needs MLflow itself (flavors, MlflowClient, autolog, reads).
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        f"client_sdk.mlflow has no {name!r} without the mlflow package: this light client"
        " provides MLflow's fluent logging calls only. `pip install mlflow` (then"
        " `import client_sdk.mlflow as mlflow` is MLflow itself, logging through the receiver:"
        " model flavors, MlflowClient, searches, autolog)"
    )
