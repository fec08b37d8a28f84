"""Read-only questions the flusher asks MLflow when something went wrong: is this run deleted,
which store is this, did the call in flight reach it; and what a refusal means for the run."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from server.flush.refusals import (
    RunMissing,
    RunProblem,
    deleted,
    deleted_experiment,
    experiment_not_active,
    is_missing,
    is_permanent,
    message,
)
from server.flush.retry import Retrier
from server.flush.run_tags import TAG_FLUSHED
from server.flush.sink import RunRef


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


def explain_run(
    client: MlflowClient, retrying: Retrier, run_key: str, run: RunRef, exc: BaseException
) -> None:
    """After MLflow refused a call for good: raises RunRefused (or RunMissing) when the run
    itself is the cause (deleted, alone or with its experiment; gone); returns when the run is
    fine, so that the refusal concerns what was written."""
    explain_experiment(client, retrying, run_key, exc)
    try:
        problem = retrying(run_problem, client, run)
    except RunMissing:
        raise
    except Exception as probe_error:
        if not is_permanent(probe_error):
            raise
        return
    if problem is not None:
        raise deleted(problem, run_key)


def explain_experiment(
    client: MlflowClient, retrying: Retrier, run_key: str, exc: BaseException
) -> None:
    """Raises RunRefused when MLflow refused because the run's experiment is deleted."""
    experiment_id = experiment_not_active(exc)
    if experiment_id is None:
        return
    try:
        name = retrying(experiment_name, client, experiment_id)
    except Exception as probe_error:
        if not is_permanent(probe_error):
            raise
        name = f"id {experiment_id}"
    raise deleted_experiment(name, experiment_id, run_key)
