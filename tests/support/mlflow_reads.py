"""Reading MLflow back: a job's runs, their points and tags, in forms tests compare."""

from __future__ import annotations

import math
from typing import Any

from tests.support.procs import wait_until

SYSTEM_TAG_PREFIXES = ("trackbridge.", "mlflow.")


TAG_ROLE = "trackbridge.role"


TAG_JOB = "trackbridge.job"


TAG_CLIENT_ID = "trackbridge.client_id"


TAG_RUN_KEY = "trackbridge.run_key"


TAG_PARENT = "mlflow.parentRunId"


def job_runs(client: Any, job: str) -> list[Any]:
    """Every run in the job's experiment (empty while the experiment does not exist)."""
    experiment = client.get_experiment_by_name(job)
    if experiment is None:
        return []
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def parent_runs(runs: list[Any]) -> list[Any]:
    return [r for r in runs if r.data.tags.get(TAG_ROLE) == "parent"]


def child_runs(runs: list[Any]) -> list[Any]:
    return [r for r in runs if r.data.tags.get(TAG_ROLE) != "parent"]


def children_by_client(client: Any, job: str) -> dict[str, Any]:
    """The job's client runs keyed by client id (later duplicates would be lost: count first)."""
    return {r.data.tags.get(TAG_CLIENT_ID): r for r in child_runs(job_runs(client, job))}


def wait_for_children(
    client: Any, job: str, count: int, timeout_s: float, *, terminal: bool = True
) -> list[Any]:
    """Polls until the job has ``count`` client runs (all ended, if ``terminal``)."""

    def ready() -> list[Any] | None:
        children = child_runs(job_runs(client, job))
        if len(children) < count:
            return None
        if terminal and any(r.info.status == "RUNNING" for r in children):
            return None
        return children

    return wait_until(
        ready,
        timeout_s,
        interval_s=0.2,
        what=f"{count} {'ended ' if terminal else ''}client runs of job {job!r} in MLflow",
    )


def metric_points(client: Any, run_id: str, key: str) -> list[tuple[str, float, int, int]]:
    """A metric's full history as sorted ``(key, value, step, timestamp)`` tuples."""
    return sorted(
        (m.key, m.value, m.step, m.timestamp) for m in client.get_metric_history(run_id, key)
    )


def all_points(client: Any, run: Any) -> dict[str, list[tuple[str, float, int, int]]]:
    """Every metric history of a run, by key."""
    return {key: metric_points(client, run.info.run_id, key) for key in run.data.metrics}


def user_tags(run: Any) -> dict[str, str]:
    return {k: v for k, v in run.data.tags.items() if not k.startswith(SYSTEM_TAG_PREFIXES)}


def group_points(
    points: list[tuple[str, float, int, int]],
) -> dict[str, list[tuple[str, float, int, int]]]:
    """Expected points grouped by key and sorted, for comparison with ``all_points``."""
    grouped: dict[str, list[tuple[str, float, int, int]]] = {}
    for point in points:
        grouped.setdefault(point[0], []).append(point)
    return {key: sorted(values) for key, values in grouped.items()}


def is_nan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)
