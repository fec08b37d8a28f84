"""Many runs created in one transaction: the rows of MLflow's ``create_run`` for each
(``SqlAlchemyStore.create_run`` and ``MlflowClient.create_run``, 3.17.2).

Per run MLflow writes a ``runs`` row (a random uuid4 hex id, status RUNNING, source UNKNOWN,
empty source fields, its user from the ``mlflow.user`` tag or ``unknown``, start time given or
now, artifact URI ``<experiment's artifact location>/<run id>/artifacts``) and its tags, with
``mlflow.runName`` added from the run name when the tags have none. The experiment must be
active (INVALID_PARAMETER_VALUE otherwise, MLflow's message).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.tracking.dbmodels.models import SqlExperiment, SqlRun, SqlTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.uri import append_to_uri_path

_EXPERIMENTS: sa.Table = SqlExperiment.__table__
_RUNS: sa.Table = SqlRun.__table__
_TAGS: sa.Table = SqlTag.__table__


@dataclass(frozen=True, slots=True)
class NewRun:
    """One run to create, as ``MlflowClient.create_run`` takes it."""

    tags: Mapping[str, str]
    run_name: str
    start_time_ms: int | None = None


def create_runs(conn: sa.Connection, experiment_id: str, runs: Sequence[NewRun]) -> list[str]:
    """Inserts the runs (in the caller's transaction); returns their ids in order.

    Raises:
        MlflowException: The experiment is missing or not active (nothing is written).
    """
    found = conn.execute(
        sa.select(_EXPERIMENTS.c.lifecycle_stage, _EXPERIMENTS.c.artifact_location).where(
            _EXPERIMENTS.c.experiment_id == int(experiment_id)
        )
    ).first()
    if found is None:
        raise MlflowException(
            f"No Experiment with id={experiment_id} exists", RESOURCE_DOES_NOT_EXIST
        )
    stage, location = found
    if stage != "active":
        raise MlflowException(
            f"The experiment {experiment_id} must be in the 'active' state. "
            f"Current state is {stage}.",
            INVALID_PARAMETER_VALUE,
        )
    now_ms = int(time.time() * 1000)
    run_rows: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    for run in runs:
        run_id = uuid.uuid4().hex
        tags = dict(run.tags)
        name_tag = tags.get(MLFLOW_RUN_NAME)
        if run.run_name and name_tag and run.run_name != name_tag:
            raise MlflowException(
                "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                f"different values (run_name='{run.run_name}', mlflow.runName='{name_tag}').",
                INVALID_PARAMETER_VALUE,
            )
        name = run.run_name or name_tag
        if not name:
            raise ValueError("a run created in bulk needs a run name")
        tags.setdefault(MLFLOW_RUN_NAME, name)
        run_rows.append({
            "run_uuid": run_id, "name": name, "source_type": "UNKNOWN", "source_name": "",
            "entry_point_name": "", "user_id": tags.get(MLFLOW_USER, "unknown"),
            "status": "RUNNING", "start_time": run.start_time_ms or now_ms, "end_time": None,
            "source_version": "", "lifecycle_stage": "active",
            "artifact_uri": _artifact_uri(location, run_id),
            "experiment_id": int(experiment_id), "deleted_time": None,
        })  # fmt: skip
        tag_rows.extend({"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items())
    if run_rows:
        conn.execute(sa.insert(_RUNS), run_rows)
    if tag_rows:
        conn.execute(sa.insert(_TAGS), tag_rows)
    return [row["run_uuid"] for row in run_rows]


def _artifact_uri(location: str, run_id: str) -> str:
    uri: str = append_to_uri_path(location, run_id, "artifacts")  # type: ignore[no-untyped-call]
    return uri
