"""The logging calls of ``client_sdk.mlflow``: metrics, params and tags, checked at the call
as MLflow checks them, then appended to memory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bridge.events import Metric
from client_sdk._compat.checks import checked_params, checked_tags, metric_point, missing_tag
from client_sdk._compat.entities import RunOperations
from client_sdk._compat.session import now_ms
from client_sdk.mlflow._state import STATE as _state

# MLflow's default for ``synchronous=None`` (read once: the hot path stays lean).
_ASYNC_DEFAULT = os.environ.get("MLFLOW_ENABLE_ASYNC_LOGGING", "").lower() in ("true", "1")
_run = _state.run


def _operations(synchronous: bool | None) -> RunOperations | None:
    if synchronous is None:
        synchronous = not _ASYNC_DEFAULT
    return None if synchronous else RunOperations(_state.session().flush)


def log_metric(  # noqa: PLR0917 - MLflow's signature
    key: str,
    value: float,
    step: int | None = None,
    synchronous: bool | None = None,
    timestamp: int | None = None,
    run_id: str | None = None,
    model_id: str | None = None,
    dataset: Any = None,
) -> RunOperations | None:
    """Logs one metric point: appended to memory, never waiting on the network.

    ``value`` may be a number, a numpy scalar or one-element array, or a one-element torch
    tensor (one on an accelerator is read on the sender thread, without a device sync here).
    """
    record = _run(run_id)
    point, step_i, ts = metric_point(key, value, step, timestamp, now_ms=now_ms())
    record.metrics[key] = point
    _state.session().writer.enqueue(record.handle, Metric(key, point, step_i, ts))
    return _operations(synchronous)


def log_metrics(  # noqa: PLR0917 - MLflow's signature
    metrics: Mapping[str, Any],
    step: int | None = None,
    synchronous: bool | None = None,
    run_id: str | None = None,
    timestamp: int | None = None,
    model_id: str | None = None,
    dataset: Any = None,
) -> RunOperations | None:
    """Logs several metrics at one step and time; all are checked before any is logged."""
    record = _run(run_id)
    now = now_ms()
    points = [
        (key, *metric_point(key, value, step, timestamp, now_ms=now, prefix=f"metrics[{i}]"))
        for i, (key, value) in enumerate(metrics.items())
    ]
    enqueue = _state.session().writer.enqueue
    for key, point, step_i, ts in points:
        record.metrics[key] = point
        enqueue(record.handle, Metric(key, point, step_i, ts))
    return _operations(synchronous)


def log_param(key: str, value: Any, synchronous: bool | None = None) -> Any:
    """Logs a param (as ``str(value)``) and returns ``value``."""
    record = _run(None)
    session = _state.session()
    params = checked_params(
        record.params, {key: value}, lambda: session.run_id(record), single=True
    )
    session.log_params(record, params)
    return value if synchronous is not False else _operations(False)


def log_params(
    params: Mapping[str, Any], synchronous: bool | None = None, run_id: str | None = None
) -> RunOperations | None:
    """Logs several params; all are checked before any is logged."""
    record = _run(run_id)
    session = _state.session()
    checked = checked_params(record.params, params, lambda: session.run_id(record), single=False)
    session.log_params(record, checked)
    return _operations(synchronous)


def set_tag(key: str, value: Any, synchronous: bool | None = None) -> RunOperations | None:
    """Sets a tag (as ``str(value)``)."""
    record = _run(None)
    _state.session().set_tags(record, checked_tags({key: value}, single=True))
    return _operations(synchronous)


def set_tags(tags: Mapping[str, Any], synchronous: bool | None = None) -> RunOperations | None:
    """Sets several tags; all are checked before any is set."""
    record = _run(None)
    _state.session().set_tags(record, checked_tags(tags, single=False))
    return _operations(synchronous)


def delete_tag(key: str) -> None:
    """Deletes a tag of the active run."""
    record = _run(None)
    session = _state.session()
    known = key in record.tags or key.startswith("mlflow.") or bool(record.resumed_id)
    if not known:
        raise missing_tag(key, session.run_id(record))
    session.delete_tag(record, key)
