"""How the MLflow-compatible layers name the receiver and experiments: ``trackbridge://``
tracking URIs, and the stable local ids experiments get before the receiver names them."""

from __future__ import annotations

import hashlib

__all__ = [
    "DEFAULT_EXPERIMENT_ID",
    "NOT_IMPLEMENTED",
    "RESOURCE_DOES_NOT_EXIST",
    "SCHEME",
    "local_experiment_id",
    "receiver_of",
]

DEFAULT_EXPERIMENT_ID = "0"
"""MLflow's id of its default experiment; here it stands for the job's experiment."""
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
SCHEME = "trackbridge://"


def receiver_of(uri: str) -> str | None:
    """The receiver address in ``trackbridge://host:port`` or ``host:port``; None for other
    tracking URIs (http, file, databricks, ...), which the bridge does not use."""
    if uri.startswith(SCHEME):
        return uri[len(SCHEME) :].rstrip("/")
    if "://" in uri or ":" not in uri:
        return None
    host, _, port = uri.rpartition(":")
    return uri if host and port.isdigit() else None


def local_experiment_id(name: str) -> str:
    """A stable numeric id for an experiment name (MLflow's own id is the receiver's business)."""
    if not name:
        return DEFAULT_EXPERIMENT_ID
    return str(int.from_bytes(hashlib.sha256(name.encode()).digest()[:6], "big") + 1)
