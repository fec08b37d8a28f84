"""The tags that say whose an MLflow run is, and the search filters that find a run by them.

Receivers alone set these tags (clients may not: server/security/ownership.py), so a search by
them is proof of whose a run is.
"""

from __future__ import annotations

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from bridge.events import RunStart

TAG_CLIENT_ID = "trackbridge.client_id"
TAG_JOB = "trackbridge.job"
TAG_RUN_KEY = "trackbridge.run_key"
TAG_ROLE = "trackbridge.role"
TAG_HEARD = "trackbridge.heard_ms"
"""When a receiver last heard from the run's client (ms since the epoch), so that a receiver
the client left does not end the run for silence while the client talks to another one."""
TAG_FLUSHED = "trackbridge.flushed"
"""The last log_batch call a run got from a receiver (``"<last seq> <token>"``). It travels in
the call itself and MLflow's SQL store commits a call's tags after its params and metrics, so a
restarted receiver reads it to tell whether the call in flight when it stopped reached MLflow."""


def client_run_tags(
    client_id: str, job: str, run_key: str, start: RunStart, parent_run_id: str | None
) -> dict[str, str]:
    """The tags a client run is created with: its start's, its parent run's id, the receiver's."""
    tags = dict(start.tags)
    if parent_run_id is not None:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    tags.update({TAG_CLIENT_ID: client_id, TAG_JOB: job, TAG_RUN_KEY: run_key, TAG_ROLE: "client"})
    if start.description:
        tags[MLFLOW_RUN_NOTE] = start.description
    return tags


def owned_by(client_id: str, run_key: str) -> str:
    """The search filter for one client's run: its client's and its key's tags, both set by
    receivers only (a run key alone is no proof: anyone who reads MLflow sees it)."""
    return (
        f"tags.`{TAG_CLIENT_ID}` = '{_quote(client_id)}'"
        f" and tags.`{TAG_RUN_KEY}` = '{_quote(run_key)}'"
    )


def parent_filter(job: str) -> str:
    """The search filter for a job's parent run."""
    return f"tags.`{TAG_JOB}` = '{_quote(job)}' and tags.`{TAG_ROLE}` = 'parent'"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
