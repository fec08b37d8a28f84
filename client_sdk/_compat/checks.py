"""The checks MLflow's fluent API makes against a tracking server, made at the call site.

With a tracking server, ``mlflow`` converts values on the client (``convert_metric_value_...``,
then a protobuf request, which raises ``TypeError``/``ValueError`` for a bad type or range),
and the server checks the rest; its REST client raises the server's error as
``"<ERROR_CODE>: <message>"``. These functions run the same checks, in the same order, and
raise the same exception class name (``MlflowException``, or Python's own ``TypeError`` and
``ValueError``), error code and message -- without a round trip.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from bridge.errors import INVALID_PARAMETER_VALUE, MlflowException, RestException
from bridge.validation import (
    MAX_INT64,
    MIN_INT64,
    validate_experiment_name,
    validate_metric_key,
    validate_param,
    validate_step_and_timestamp,
    validate_tag,
)
from client_sdk._values import DeviceScalar, fluent_value

RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
_MAX_CHECKED_KEYS = 100_000
_checked_keys: set[str] = set()
"""Metric keys that passed MLflow's checks (their next points skip the key checks)."""

PARAM_VALIDATION_MSG = """

The cause of this error is typically due to repeated calls
to an individual run_id event logging.

Incorrect Example:
---------------------------------------
with mlflow.start_run():
    mlflow.log_param("depth", 3)
    mlflow.log_param("depth", 5)
---------------------------------------

Which will throw an MlflowException for overwriting a
logged parameter.

Correct Example:
---------------------------------------
with mlflow.start_run():
    with mlflow.start_run(nested=True):
        mlflow.log_param("depth", 3)
    with mlflow.start_run(nested=True):
        mlflow.log_param("depth", 5)
---------------------------------------

Which will create a new nested run for each individual
model and prevent parameter key collisions within the
tracking store."""


def rest_error(exc: MlflowException) -> MlflowException:
    """The error as MLflow's REST client reports a server's refusal."""
    return RestException(exc.message, exc.error_code)


def _missing(path: str) -> MlflowException:
    return rest_error(
        MlflowException.invalid_parameter_value(
            f"Missing value for required parameter '{path}'. See the API docs for more"
            " information about request parameters."
        )
    )


def experiment_name(name: str, path: str) -> str:
    """An experiment name MLflow's tracking server accepts, else its refusal as MLflow's REST
    client raises it. ``path`` is the request field the server checks first: ``name`` for
    create_experiment, ``experiment_name`` for the lookup that set_experiment makes."""
    if not name:
        raise _missing(path)
    try:
        return validate_experiment_name(name)
    except MlflowException as exc:
        raise rest_error(exc) from None


def _int64(value: object) -> int:
    number = operator.index(value)  # type: ignore[arg-type]  # protobuf's TypeError and wording
    if not MIN_INT64 <= number <= MAX_INT64:
        raise ValueError(f"Value out of range: {number}")
    return number


def _double(value: object) -> None:
    if not isinstance(value, float | DeviceScalar):
        raise TypeError(f"must be real number, not {type(value).__name__}")


def metric_point(
    key: object, value: object, step: object, timestamp_ms: object, *, now_ms: int, prefix: str = ""
) -> tuple[float, int, int]:
    """Checks one metric point of ``log_metric`` (or, with ``prefix`` ``metrics[i]``, of
    ``log_metrics``); returns ``(value, step, timestamp_ms)`` as MLflow sends them: ``step or
    0``, ``timestamp or now``, the value converted (possibly a deferred device scalar)."""
    ts = timestamp_ms or now_ms
    step = step or 0
    if (  # the hot path: a float at an int step and time, under a key seen before
        type(value) is float
        and type(step) is int
        and type(ts) is int
        and key in _checked_keys
        and MIN_INT64 <= step <= MAX_INT64
        and 0 <= ts <= MAX_INT64
    ):
        return value, step, ts
    converted = fluent_value(value)
    if converted is not None or prefix:  # log_metric leaves a None value out of its request
        _double(converted)
    ts = _int64(ts)
    step_i = _int64(step)
    if key is None and not prefix:
        raise _missing("key")
    if converted is None:
        raise _missing("value")
    try:
        validate_metric_key(key, prefix)
        validate_step_and_timestamp(str(key), converted, step_i, ts, prefix)  # type: ignore[arg-type]
    except MlflowException as exc:
        raise rest_error(exc) from None
    if len(_checked_keys) < _MAX_CHECKED_KEYS:
        _checked_keys.add(key)  # type: ignore[arg-type]
    return converted, step_i, ts  # type: ignore[return-value]


def param_value(value: object) -> str:
    """How MLflow stringifies a param value."""
    return str(value)


def checked_params(
    logged: Mapping[str, str],
    params: Mapping[Any, Any],
    run_id: Callable[[], str],
    *,
    single: bool,
    advice: bool | None = None,
) -> list[tuple[str, str]]:
    """Checks params for ``log_param`` (``single``) or ``log_params``; returns them as sent.

    ``run_id`` gives the id to name in an error (called only then). ``advice`` (default:
    ``single``) appends the advice MLflow's ``log_param`` adds to its
    bad-input errors (its tracking store does not; the plugin store passes False).

    Raises:
        MlflowException: A bad key, or a changed value (MLflow's words for either call).
    """
    items = [(k, param_value(v)) for k, v in params.items()]
    try:
        checked = []
        for i, (key, value) in enumerate(items):
            if key is None and single:
                raise _missing("key")
            prefix = "" if single else f"params[{i}]"
            checked.append((str(key), validate_param(key, value, prefix=prefix)))
        changed = [(k, logged[k], v) for k, v in checked if k in logged and logged[k] != v]
        if changed and single:
            key, old, new = changed[0]
            raise rest_error(
                MlflowException.invalid_parameter_value(
                    f"Changing param values is not allowed. Param with key='{key}' was already"
                    f" logged with value='{old}' for run ID='{run_id()}'. Attempted logging new"
                    f" value '{new}'."
                )
            )
        if changed:
            listed = [{"key": k, "old_value": o, "new_value": n} for k, o, n in changed]
            raise rest_error(
                MlflowException.invalid_parameter_value(
                    f"Changing param values is not allowed. Params were already logged='{listed}'"
                    f" for run ID='{run_id()}'."
                )
            )
    except MlflowException as exc:
        if not isinstance(exc, RestException):
            exc = rest_error(exc)
        if (single if advice is None else advice) and exc.error_code == INVALID_PARAMETER_VALUE:
            # MLflow's log_param adds its advice to any bad-input error.
            raise MlflowException(f"{exc.message}{PARAM_VALIDATION_MSG}", exc.error_code) from None
        raise exc from None
    return checked


def checked_tags(tags: Mapping[Any, Any], *, single: bool) -> list[tuple[str, str]]:
    """Checks tags for ``set_tag`` (``single``) or ``set_tags``; returns them as sent."""
    checked = []
    for i, (key, value) in enumerate(tags.items()):
        if key is None and single:
            raise _missing("key")
        try:
            text = validate_tag(key, str(value), prefix="" if single else f"tags[{i}]")
        except MlflowException as exc:
            raise rest_error(exc) from None
        checked.append((str(key), text))
    return checked


def missing_tag(key: str, run_id: str) -> MlflowException:
    """MLflow's error for deleting a tag the run does not have."""
    return rest_error(
        MlflowException(f"No tag with name: {key} in run with id {run_id}", RESOURCE_DOES_NOT_EXIST)
    )
