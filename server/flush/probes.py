"""Read-only questions the flusher asks MLflow when something went wrong: is this run deleted,
which store is this, did the call in flight reach it."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from server.flush.refusals import RunMissing, RunProblem, is_missing, message
from server.flush.sink import TAG_FLUSHED, RunRef


def run_problem(client: MlflowClient, run: RunRef) -> RunProblem | None:
    """Why MLflow refuses to write to a run: deleted (alone or with its experiment); None when
    the run is live.

    Raises:
        RunMissing: MLflow has no such run.
    """
    try:
        found = client.get_run(run.run_id)
    except MlflowException as exc:
        if is_missing(exc):
            raise RunMissing(run.run_id, message(exc)) from None
        raise
    if found.info.lifecycle_stage != "deleted":
        return None
    experiment = client.get_experiment(found.info.experiment_id)
    return RunProblem(
        run.run_id,
        str(experiment.experiment_id),
        str(experiment.name),
        experiment.lifecycle_stage == "deleted",
    )


def experiment_name(client: MlflowClient, experiment_id: str) -> str:
    """An experiment's name."""
    return str(client.get_experiment(experiment_id).name)


def progress(client: MlflowClient, run: RunRef) -> str:
    """The run's ``trackbridge.flushed`` tag ("" when it has none)."""
    return str(client.get_run(run.run_id).data.tags.get(TAG_FLUSHED, ""))


def store_id(client: MlflowClient) -> str:
    """What identifies an MLflow store: when its Default experiment (id 0, which MLflow makes
    with the store) was created; "" when the receiver may not read it."""
    try:
        default = client.get_experiment("0")
    except MlflowException as exc:
        if is_missing(exc) or exc.error_code == "PERMISSION_DENIED":
            return ""
        raise
    return f"default experiment created at {default.creation_time}"
