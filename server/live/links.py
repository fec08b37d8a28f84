"""Links from the live view to the MLflow UI, and to the live page itself."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

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


def page_url(listen_host: str, port: int, job: str = "") -> str:
    """The live page's address (of one job, when named) for a server listening on
    ``listen_host``; a wildcard host is shown as loopback, where a browser on the same machine
    reaches it."""
    host = listen_host if listen_host not in ("0.0.0.0", "::", "") else "127.0.0.1"  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    path = f"/jobs/{quote(job, safe='')}" if job else "/"
    return f"http://{host}:{port}{path}"
