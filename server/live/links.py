"""Links from the live view to the MLflow UI."""

from __future__ import annotations

from urllib.parse import urlsplit

EMBEDDED_UI = "http://127.0.0.1:5000"
"""Where ``mlflow ui`` serves a local store by default."""


def mlflow_ui_url(tracking_uri: str) -> str:
    """Where the MLflow UI of a tracking URI is: the tracking server itself when it is
    http(s) (without any credentials in it), else what ``mlflow ui`` serves by default."""
    parts = urlsplit(tracking_uri)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return EMBEDDED_UI
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path}".rstrip("/")


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run ("" until the run exists)."""
    if not run_id or not experiment_id:
        return ""
    return f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}"
