"""Resuming an MLflow run that exists already, as MLflow's ``start_run(run_id=...)`` does."""

from __future__ import annotations

import logging

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from bridge.events import RunStart
from server.flush.refusals import is_permanent
from server.flush.run_tags import TAG_CLIENT_ID

_logger = logging.getLogger(__name__)


def attach(client: MlflowClient, client_id: str, start: RunStart) -> tuple[str, str] | None:
    """``(run_id, experiment_id)`` of the existing run a client resumes by MLflow id
    (``start.resume_run_id``), reopened, if it is that client's own; else None."""
    try:
        run = client.get_run(start.resume_run_id)
    except MlflowException as exc:
        if not is_permanent(exc):
            raise
        _logger.error("run %s to resume: %s; starting a new run", start.resume_run_id, exc)
        return None
    owner = run.data.tags.get(TAG_CLIENT_ID)
    if owner != client_id:
        _logger.error(
            "client %r may not resume run %s (its client is %r); starting a new run",
            client_id,
            start.resume_run_id,
            owner,
        )
        return None
    reopen(client, run.info.run_id, start)
    return run.info.run_id, str(run.info.experiment_id)


def reopen(client: MlflowClient, run_id: str, start: RunStart, set_running: bool = True) -> None:
    """Sets a run RUNNING again (renamed, tagged) as MLflow's start_run(run_id=...) does;
    without ``set_running`` it is only renamed and tagged."""
    info = client.get_run(run_id).info
    name = start.run_name or None
    running = set_running and info.status != "RUNNING"
    if running or (name is not None and name != info.run_name):
        client.update_run(run_id, status="RUNNING" if running else None, name=name)
    tags = [RunTag(k, v) for k, v in start.tags.items()]
    if start.description:
        tags.append(RunTag(MLFLOW_RUN_NOTE, start.description))
    if tags:
        client.log_batch(run_id, tags=tags, synchronous=True)
