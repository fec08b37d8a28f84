"""MLflow artifact repositories resolved against the receiver's own MLflow.

MLflow resolves an ``mlflow-artifacts:/`` location (what a default ``mlflow server`` gives runs
and logged models) against a tracking URI, and when none is passed it takes the process-wide
default (``mlflow.set_tracking_uri``, ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in
the working directory), which refuses such locations. Every artifact read or write of the
receiver goes through here, so each resolves against the ``--tracking-uri`` it was started
with, with the credentials MLflow reads from the receiver's environment.
"""

from __future__ import annotations

from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository


def artifact_repository(artifact_uri: str, tracking_uri: str) -> ArtifactRepository:
    """MLflow's repository for ``artifact_uri`` (a run's or a logged model's location: S3,
    GCS, ``mlflow-artifacts:``, a local path, ...), resolved against ``tracking_uri``."""
    return get_artifact_repository(
        artifact_uri, tracking_uri=tracking_uri, registry_uri=tracking_uri
    )
