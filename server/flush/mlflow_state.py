"""What is wrong with MLflow, in words: the flusher's last error, explained, kept in the data
directory (``mlflow-state.json``) so that ``trackbridge status`` can show it, secret-free."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bridge import envvars
from bridge.secret import redact_text
from server.data_dir import write_private

_logger = logging.getLogger(__name__)

STATE_FILE = "mlflow-state.json"
HEARTBEAT_S = 5.0
"""A running receiver rewrites the state at least this often."""
STALE_AFTER_S = 20.0
"""A state older than this is the last word of a receiver that is not running."""
_HTTP_STATUS = re.compile(r"\berror code (\d{3})\b|\bHTTP (?:status )?(\d{3})\b")


def http_status(error: str) -> int | None:
    """The HTTP status an MLflow error text reports, if any."""
    match = _HTTP_STATUS.search(error)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


_DIAGNOSES: tuple[tuple[Callable[[int | None, str], bool], str], ...] = (
    (
        lambda status, text: status == 401 or "unauthenticated" in text,
        "MLflow refused the receiver's credentials (HTTP 401): check"
        f" {envvars.MLFLOW_TRACKING_USERNAME} and {envvars.MLFLOW_TRACKING_PASSWORD} (or"
        f" {envvars.MLFLOW_TRACKING_PASSWORD_FILE}), or {envvars.MLFLOW_TRACKING_TOKEN}",
    ),
    (
        lambda status, text: status == 403 or "permission_denied" in text,
        "the receiver's MLflow user lacks a permission (HTTP 403): grant it EDIT on the"
        " experiment (and the right to create experiments, or create them first)",
    ),
    (
        lambda status, text: "certificate" in text or "ssl" in text,
        f"TLS to MLflow failed: set {envvars.MLFLOW_TRACKING_SERVER_CERT_PATH} to the CA bundle"
        " that signed MLflow's certificate",
    ),
    (
        lambda status, text: text.startswith("sinkfailed"),
        "writing the JSON-lines files failed (a full disk, permissions, a damaged file: see the"
        " last error); their events wait in the queue, and MLflow's with them",
    ),
    (
        lambda status, text: "connection refused" in text or "max retries exceeded" in text,
        "MLflow cannot be reached: is it running, and is the tracking URI right?",
    ),
    (
        lambda status, text: "timed out" in text or "timeout" in text,
        "MLflow did not answer in time",
    ),
    (
        lambda status, text: status is not None and status >= 500,
        "MLflow failed with an HTTP 5xx error: see MLflow's own log",
    ),
)


def diagnose(error: str) -> str:
    """What an MLflow error means for the operator, and where to look."""
    status = http_status(error)
    lowered = error.lower()
    for applies, meaning in _DIAGNOSES:
        if applies(status, lowered):
            return meaning
    return "MLflow call failed"


def write_state(
    data_dir: Path,
    error: str,
    since_ms: int,
    secrets: Iterable[str] = (),
    sinks: Sequence[str] = ("mlflow",),
) -> None:
    """Records the current MLflow error ("" once MLflow works again), atomically, with the
    receiver's sinks (``mlflow``, ``jsonl:DIR``)."""
    clean = redact_text(error, secrets)
    state = {
        "sinks": list(sinks),
        "ok": not error,
        "error": clean,
        "diagnosis": diagnose(clean) if error else "",
        "since_ms": since_ms,
        "updated_ms": time.time_ns() // 1_000_000,
    }
    write_private(data_dir / STATE_FILE, json.dumps(state))


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """The recorded MLflow state, or None when the receiver has recorded none."""
    try:
        state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


async def record_errors(
    last_error: Callable[[], str],
    data_dir: Path,
    secrets: Iterable[str],
    interval_s: float = 1.0,
    sinks: Sequence[str] = ("mlflow",),
) -> None:
    """Keeps the state file in step with ``last_error()`` until cancelled, rewriting it at
    least every ``HEARTBEAT_S`` so that ``status`` can tell a running receiver's state from the
    last word of a stopped one."""
    secrets = tuple(secrets)
    recorded: str | None = None
    since_ms = 0
    written = 0.0
    while True:
        error = last_error()
        if error != recorded or time.monotonic() - written >= HEARTBEAT_S:
            if recorded is None or bool(error) != bool(recorded):
                since_ms = time.time_ns() // 1_000_000
            try:
                write_state(data_dir, error, since_ms, secrets, sinks)
            except OSError as exc:
                _logger.warning("cannot record the MLflow state in %s: %s", data_dir, exc)
            else:
                recorded = error
                written = time.monotonic()
        await asyncio.sleep(interval_s)


def is_current(state: dict[str, Any], now_ms: int | None = None) -> bool:
    """Whether a recorded state comes from a receiver that is running (a recent heartbeat)."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return now_ms - int(state.get("updated_ms", 0)) <= STALE_AFTER_S * 1000
