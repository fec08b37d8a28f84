"""What an example's federation left in MLflow, told per site: its runs, metric points,
rounds and status; the job's aggregates (the receiver's parent run) and where to look."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

TAG_JOB = "trackbridge.job"
TAG_ROLE = "trackbridge.role"
TAG_CLIENT_ID = "trackbridge.client_id"
ROUND_METRIC = "trackbridge.round"


def page_address(receiver: str, http_port: int | None, job: str) -> str:
    """The live page of ``job``: the receiver's own HTTP port when known, else the default
    (its gRPC port + 1)."""
    host, _, port = receiver.rpartition(":")
    return f"http://{host}:{http_port or int(port) + 1}/jobs/{job}"


def wait_drained(page: str, timeout_s: float = 60.0) -> bool:
    """Waits until the receiver behind the live page ``page`` has written everything of its job
    to MLflow (the page's job backlog is 0); False when it could not tell in time."""
    base, _, job = page.partition("/jobs/")
    url = f"{base}/api/jobs/{urllib.parse.quote(job, safe='')}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - its page
                if json.load(response)["receiver"]["job_backlog"] == 0:
                    return True
        except (OSError, ValueError, KeyError):
            return False  # no page there (another address, a token): nothing to wait on
        time.sleep(0.5)
    return False


def ui_hint(tracking_uri: str) -> tuple[str, str]:
    """How to open the MLflow UI on ``tracking_uri``, and the UI's base address."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}", tracking_uri.rstrip("/")
    return f"mlflow ui --backend-store-uri {tracking_uri}", "http://127.0.0.1:5000"


def summary(tracking_uri: str, job: str) -> list[str]:
    """Lines telling what MLflow holds of ``job`` (read with MLflow's own client)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = {str(e.experiment_id): e.name for e in _all(client.search_experiments)}
    runs = _all(
        client.search_runs,
        list(experiments),
        filter_string=f"tags.`{TAG_JOB}` = '{job}'",
    )
    if not runs:
        return [f"MLflow holds no run of job {job!r} yet"]
    sites: dict[str, list[Any]] = {}
    parents = []
    for run in runs:
        if run.data.tags.get(TAG_ROLE) == "parent":
            parents.append(run)
        else:
            sites.setdefault(run.data.tags.get(TAG_CLIENT_ID, "?"), []).append(run)
    lines = [f"job {job!r} in MLflow:"]
    for site, site_runs in sorted(sites.items()):
        points, rounds = 0, 0
        for run in site_runs:
            for key in run.data.metrics:
                history = client.get_metric_history(run.info.run_id, key)
                if key == ROUND_METRIC:
                    rounds = max(rounds, len({m.value for m in history}))
                else:
                    points += len(history)
        status = ",".join(sorted({r.info.status for r in site_runs}))
        told = str(rounds) if rounds else "-"  # no point logged with round=
        lines.append(
            f"  {site:<12} runs {len(site_runs)}  points {points:>5}  rounds {told}  {status}"
        )
    for parent in parents:
        counts = [k for k in parent.data.metrics if k.endswith("/count")]
        per_round = {
            k[: -len("/count")]: len(client.get_metric_history(parent.info.run_id, k))
            for k in sorted(counts)
        }
        told = ", ".join(f"{k} ({n} rounds)" for k, n in per_round.items()) or "none yet"
        lines.append(
            f"  aggregates across sites: run {parent.info.run_id} ({parent.info.status}): {told}"
        )
    how, base = ui_hint(tracking_uri)
    for exp_id in sorted({r.info.experiment_id for r in runs}):
        lines.append(
            f"  experiment {experiments.get(exp_id, exp_id)!r}: {base}/#/experiments/{exp_id}"
        )
    lines.append(f"  ({how})")
    return lines


def _all(search: Any, *args: Any, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        page = search(*args, max_results=1000, page_token=token, **kwargs)
        out.extend(page)
        token = page.token
        if not token:
            return out


def embedded_uri(data_dir: Path) -> str:
    """The tracking URI of a receiver's embedded MLflow store."""
    return f"sqlite:///{data_dir / 'mlflow.db'}"
