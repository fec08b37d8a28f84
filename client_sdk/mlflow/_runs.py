"""How ``client_sdk.mlflow.start_run`` starts a run or resumes one (MLflow's rules)."""

from __future__ import annotations

import contextlib
import getpass
import sys

from bridge.errors import MlflowException
from bridge.validation import validate_run_id
from client_sdk._compat.names import random_run_name
from client_sdk._compat.session import RunRecord
from client_sdk.mlflow._state import STATE as _state

NOTE_TAG = "mlflow.note.content"


def system_tags() -> dict[str, str]:
    """The tags MLflow's default context providers add (user, source)."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": sys.argv[0] or "<console>"}
    with contextlib.suppress(KeyError, OSError):
        tags["mlflow.user"] = getpass.getuser()
    return tags


def resume(run_id: str, run_name: str | None, tags: dict[str, str], note: str) -> RunRecord:
    """``start_run(run_id=...)``: a run of this process again, else an MLflow run by id."""
    session = _state.session()
    record = session.find(run_id)
    if record is None:
        experiment = _state.default_experiment()
        return session.start_run(
            run_name or "", experiment=experiment, tags=tags, description=note, resume_run_id=run_id
        )
    if _state.experiment is not None and _state.experiment != record.experiment:
        raise MlflowException(
            f"Cannot start run with ID {run_id} because active experiment ID does not match"
            " environment run ID. Make sure --experiment-name or --experiment-id matches"
            " experiment set with set_experiment(), or just use command-line arguments"
        )
    session.reopen(record, run_name or "", tags, note)
    return record


def new_run(  # noqa: PLR0917 - MLflow's signature
    experiment_id: str | int | None,
    run_name: str | None,
    nested: bool,
    parent_run_id: str | None,
    tags: dict[str, str],
    description: str | None,
) -> RunRecord:
    """A new run: nested under the active one (or ``parent_run_id``) when asked."""
    session = _state.session()
    stack = _state.stack()
    parent = stack[-1] if stack else None
    if parent_run_id:
        validate_run_id(parent_run_id)
        if parent is not None and session.find(parent_run_id) is not parent:
            current = session.run_id(parent, wait=False)
            raise MlflowException(
                f"Current run with UUID {current} does not match the specified parent_run_id"
                f" {parent_run_id}. To start a new nested run under the parent run with UUID"
                f" {current}, first end the current run with mlflow.end_run()."
            )
        parent = _state.find_run(parent_run_id)
    experiment, mlflow_experiment_id = _state.run_experiment(experiment_id)
    name = run_name or random_run_name()
    all_tags = {**system_tags(), **tags, "mlflow.runName": name}
    record = session.start_run(
        name,
        experiment=experiment,
        tags=all_tags,
        description=description or "",
        parent=parent,
        experiment_id=mlflow_experiment_id,
    )
    if description:
        record.tags[NOTE_TAG] = description
    return record
