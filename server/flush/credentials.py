"""The receiver's MLflow credentials: read from files at start, handed to MLflow through the
environment (where its client reads them), and kept out of every log line.

MLflow reads ``MLFLOW_TRACKING_USERNAME``/``PASSWORD`` (basic auth), ``MLFLOW_TRACKING_TOKEN``
(bearer), ``MLFLOW_TRACKING_SERVER_CERT_PATH`` (CA bundle) and
``MLFLOW_TRACKING_CLIENT_CERT_PATH`` (client certificate) itself. A secret may instead live in
a file named by the same variable with ``_FILE`` appended (a Docker or Kubernetes secret), so
that it never shows in the process environment of the deployment's manifest.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterable, Mapping, MutableMapping
from types import TracebackType

from bridge import envvars
from bridge.secret import read_secret_file, redact_text

FILE_VARIANTS = {
    envvars.MLFLOW_TRACKING_USERNAME: envvars.MLFLOW_TRACKING_USERNAME_FILE,
    envvars.MLFLOW_TRACKING_PASSWORD: envvars.MLFLOW_TRACKING_PASSWORD_FILE,
    envvars.MLFLOW_TRACKING_TOKEN: envvars.MLFLOW_TRACKING_TOKEN_FILE,
}
"""Each MLflow credential variable and the variable naming a file that may hold it."""

_MLFLOW_CLIENT_DEFAULTS = {
    # MLflow's HTTP client retries 5xx for minutes by itself; the flusher's tenacity owns
    # retrying.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MlflowClient prints a "View run" link to stdout for every run it ends.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    # Artifact reads for clients would draw a progress bar in the receiver's log.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def set_mlflow_client_defaults(env: MutableMapping[str, str]) -> None:
    """Sets how the receiver's MLflow client behaves, where the operator has not."""
    for name, value in _MLFLOW_CLIENT_DEFAULTS.items():
        env.setdefault(name, value)


SECRET_VARIABLES = (
    envvars.MLFLOW_TRACKING_PASSWORD,
    envvars.MLFLOW_TRACKING_TOKEN,
    envvars.TRACKBRIDGE_VIEWER_TOKEN,
    envvars.TRACKBRIDGE_TOKEN_KEYS,
)
"""Variables whose values never appear in logs, messages or status output."""


def export_secret_files(environ: MutableMapping[str, str]) -> list[str]:
    """Reads each ``MLFLOW_TRACKING_*_FILE`` into its variable, for MLflow to find.

    Returns the names of the variables set. Raises ValueError (naming the variable and the
    path, never the contents) when a file cannot be read or both forms are set.
    """
    loaded = []
    for name, file_name in FILE_VARIANTS.items():
        path = environ.get(file_name)
        if not path:
            continue
        value = read_secret_file(file_name, path)
        if not value:
            raise ValueError(f"{file_name}: {path} is empty")
        if environ.get(name, value) != value:  # equal: this file was exported before
            raise ValueError(f"set {name} or {file_name}, not both")
        environ[name] = value
        loaded.append(name)
    return loaded


def configured_secrets(env: Mapping[str, str] = os.environ) -> list[str]:
    """The secret values set in ``env`` (read the ``_FILE`` variants first), the secrets of
    signed-token keys given as text (``<key id> <secret>`` lines) among them."""
    found = [env[name] for name in SECRET_VARIABLES if env.get(name)]
    for line in env.get(envvars.TRACKBRIDGE_TOKEN_KEYS, "").splitlines():
        secret = line.split("#", 1)[0].strip().partition(" ")[2].strip()
        if secret:
            found.append(secret)
    return found


def describe_mlflow_auth(env: Mapping[str, str] = os.environ) -> str:
    """How the receiver authenticates to MLflow, in words, without any secret."""
    user = env.get(envvars.MLFLOW_TRACKING_USERNAME, "")
    parts = []
    if user and env.get(envvars.MLFLOW_TRACKING_PASSWORD):
        parts.append(f"basic auth as user {user!r}")
    elif user:
        parts.append(f"user {user!r} but no password")
    elif env.get(envvars.MLFLOW_TRACKING_PASSWORD):
        parts.append("a password but no user name")
    if env.get(envvars.MLFLOW_TRACKING_TOKEN):
        parts.append("a bearer token")
    if env.get(envvars.MLFLOW_TRACKING_CLIENT_CERT_PATH):
        parts.append(f"client certificate {env[envvars.MLFLOW_TRACKING_CLIENT_CERT_PATH]}")
    return ", ".join(parts) or "no credentials"


class RedactingFilter(logging.Filter):
    """Replaces configured secrets, and passwords inside URIs, in log records (message,
    arguments and traceback text) with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message, self._secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_text(text, self._secrets)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text, self._secrets)
        return True


def install_log_redaction(env: Mapping[str, str] = os.environ) -> None:
    """Redacts the secrets in ``env`` from every log handler of the root logger and of MLflow's
    own logger, and from tracebacks of uncaught exceptions.

    For entry points only (the receiver, ``doctor``), after logging is configured.
    """
    secrets = configured_secrets(env)
    redacting = RedactingFilter(secrets)
    for logger in (logging.getLogger(), logging.getLogger("mlflow")):
        for handler in logger.handlers:
            handler.addFilter(redacting)

    def excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        text = "".join(traceback.format_exception(kind, exc, tb))
        sys.stderr.write(redact_text(text, secrets))

    sys.excepthook = excepthook
