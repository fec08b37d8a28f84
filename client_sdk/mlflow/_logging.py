"""The logging calls of ``client_sdk.mlflow``: metrics, params and tags, checked at the call
as MLflow checks them, then appended to memory (metrics through the calls both faces share,
client_sdk/_compat/fluent.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from client_sdk._compat.checks import checked_params, checked_tags, missing_tag
from client_sdk._compat.entities import RunOperations
from client_sdk.mlflow._state import FLUENT, LIGHT
from client_sdk.mlflow._state import STATE as _state

_run = _state.run
_operations = LIGHT.operations
log_metric = FLUENT.log_metric
log_metrics = FLUENT.log_metrics


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
