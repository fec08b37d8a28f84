"""MLflow's refusals that concern one run, worded for the operator with the fix.

A refusal that retrying cannot fix (the run or its experiment deleted in MLflow, an experiment
MLflow will not create, a run it will not end) quarantines that run alone: its events wait in
the queue, and the reason says what to do before ``trackbridge dead-letters replay``. A deleted
run or experiment is never recreated behind the operator's back: someone deleted it on purpose,
or by mistake, and only they know which.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from dataclasses import dataclass

from mlflow.exceptions import MlflowException, RestException

RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
_NOT_ACTIVE_EXPERIMENT = re.compile(r"experiment (?:with ID )?'?(\d+)'? must be in the 'active'")
_NOT_ACTIVE_EXPERIMENT_2 = re.compile(r"non-active experiment with ID (\d+)")


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
        if isinstance(exc.__cause__, sqlite3.OperationalError) or _pool_timeout(exc.__cause__):
            return False  # "database is locked" and friends; no connection free in its pool
        return exc.error_code in _PERMANENT_CODES
    return False


def _pool_timeout(cause: BaseException | None) -> bool:
    """SQLAlchemy's "no connection free in the pool in time" (MLflow's own store raises it as
    BAD_REQUEST). Told by its type's module and name: SQLAlchemy is loaded only where MLflow is
    a database (server/flush/bulk/sink.py), and is in ``sys.modules`` wherever it raised."""
    sa_exc = sys.modules.get("sqlalchemy.exc")
    return sa_exc is not None and isinstance(cause, sa_exc.TimeoutError)


class RunRefused(Exception):
    """MLflow refuses something about one run for good; the run is quarantined with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunMissing(Exception):
    """A run the receiver knows by its MLflow id is not in MLflow (another or a wiped store, or
    a run deleted for good)."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id


@dataclass(frozen=True, slots=True)
class RunProblem:
    """What is wrong with an MLflow run, as MLflow reports it."""

    run_id: str
    experiment_id: str
    experiment_name: str
    experiment_deleted: bool


def message(exc: BaseException) -> str:
    """MLflow's own words for an error."""
    if isinstance(exc, MlflowException):
        return str(exc.message)
    return f"{type(exc).__name__}: {exc}"


def is_missing(exc: BaseException) -> bool:
    """Whether MLflow said the resource does not exist."""
    return isinstance(exc, MlflowException) and exc.error_code == RESOURCE_DOES_NOT_EXIST


def replay_hint(run_key: str, *, new_run: bool = False) -> str:
    """The command that lets a quarantined run flow again."""
    return f"`trackbridge dead-letters replay --run {run_key}{' --new-run' if new_run else ''}`"


def deleted(problem: RunProblem, run_key: str) -> RunRefused:
    """A run deleted in MLflow (alone, or with its experiment)."""
    if problem.experiment_deleted:
        return RunRefused(
            f"MLflow experiment {problem.experiment_name!r} (id {problem.experiment_id}) was"
            " deleted: restore it (MLflow UI, or `mlflow experiments restore --experiment-id"
            f" {problem.experiment_id}`), then {replay_hint(run_key)}"
        )
    return RunRefused(
        f"MLflow run {problem.run_id} was deleted: restore it (MLflow UI, or `mlflow runs"
        f" restore --run-id {problem.run_id}`), then {replay_hint(run_key)}"
    )


def deleted_experiment(name: str, experiment_id: str, run_key: str) -> RunRefused:
    """A run whose experiment is deleted in MLflow, so MLflow will not create it there."""
    return deleted(RunProblem("", experiment_id, name, True), run_key)


def purged(run_id: str, run_key: str) -> RunRefused:
    """A run MLflow no longer has at all, in a store that is still the same one."""
    hint = replay_hint(run_key, new_run=True)
    return RunRefused(
        f"MLflow run {run_id} no longer exists (deleted for good); {hint} writes what the"
        " run holds to a new run"
    )


def refused(what: str, exc: BaseException, run_key: str) -> RunRefused:
    """Any other refusal for good, with MLflow's words."""
    return RunRefused(
        f"MLflow refused to {what}: {message(exc)}; fix the cause in MLflow, then"
        f" {replay_hint(run_key)}"
    )


def experiment_not_active(exc: BaseException) -> str | None:
    """The id of the experiment an MLflow error says is not active, if it says so."""
    text = message(exc)
    found = _NOT_ACTIVE_EXPERIMENT.search(text) or _NOT_ACTIVE_EXPERIMENT_2.search(text)
    return found.group(1) if found else None
