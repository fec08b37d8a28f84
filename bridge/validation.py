"""MLflow's input rules (mlflow 3.17) as pure functions, raising MLflow's own wording.

The client runs these at the call site so bad input fails where it was written, without a
network round trip; the receiver runs them again on every batch, since it trusts no client.
"""

from __future__ import annotations

import json
import logging
import numbers
import posixpath
import re
from collections.abc import Mapping

from bridge.errors import MlflowException

_logger = logging.getLogger(__name__)

MAX_ENTITY_KEY_LENGTH = 250
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
MAX_EXPERIMENT_NAME_LENGTH = 500
MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)

RESERVED_TAG_PREFIX = "trackbridge."
"""Tags under this prefix name a run's owner and state (``trackbridge.client_id``,
``trackbridge.run_key``, ...): receivers alone set them, and find runs again by them."""
SDK_TAGS = frozenset({"trackbridge.rank"})
"""Reserved tags the client SDK itself puts on a run's start (never a user's call), which
carry no identity: a receiver lets these through."""

_NAME_RE = re.compile(r"^[/\w.\- :]*$")
_BAD_CHARACTERS = (
    "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.),"
    " spaces ( ), colon(:) and slashes (/)."
)
_MISSING_KEY_NAME = "A key name must be provided."


def invalid_value(path: str, value: object, message: str | None = None) -> str:
    """MLflow's standard message for an invalid argument."""
    formatted = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if message:
        return f"Invalid value {formatted} for parameter '{path}' supplied: {message}"
    return f"Invalid value {formatted} for parameter '{path}' supplied."


def _path_not_unique(name: str) -> bool:
    norm = posixpath.normpath(name)
    return norm != name or norm == "." or norm.startswith("..") or norm.startswith("/")


def _check_name(name: object, path: str, missing: str) -> str:
    if name is None:
        raise MlflowException.invalid_parameter_value(missing)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise MlflowException.invalid_parameter_value(invalid_value(path, name, _BAD_CHARACTERS))
    if _path_not_unique(name):
        message = (
            "Names may be treated as files in certain cases, and must not resolve to other names"
            f" when treated as such. This name would resolve to {posixpath.normpath(name)!r}"
        )
        raise MlflowException.invalid_parameter_value(invalid_value(path, name, message))
    return name


def _check_length(entity: str, limit: int, value: str, *, truncate: bool = False) -> str:
    if len(value) <= limit:
        return value
    if truncate:
        _logger.warning(
            "%s '%s...' (%d characters) is truncated to %d characters to meet the length limit.",
            entity,
            value[:100],
            len(value),
            limit,
        )
        return value[:limit]
    raise MlflowException.invalid_parameter_value(
        f"'{entity}' exceeds the maximum length of {limit} characters"
    )


def check_encodable(value: str) -> str:
    """Returns ``value`` if UTF-8 can carry it. A lone surrogate (what ``os.fsdecode`` makes
    of a file name that is not UTF-8) cannot: MLflow raises there (``MlflowException``,
    INTERNAL_ERROR, with the codec's words), and so does this, at the call."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MlflowException(exc) from None
    return value


def json_path(prefix: str, name: str) -> str:
    """MLflow's name for a field inside a request (``metrics[1].name``); ``name`` alone at top."""
    if not prefix:
        return name
    return f"{prefix}{name}" if name.startswith("[") else f"{prefix}.{name}"


def validate_metric_key(key: object, prefix: str = "") -> str:
    """Checks a metric name; returns it unchanged. ``prefix`` names the entry in a batch
    (``metrics[1]``), as MLflow's messages do."""
    path = json_path(prefix, "name")
    if key is None:
        raise MlflowException.invalid_parameter_value(
            invalid_value(path, None, f"Metric name cannot be None. {_MISSING_KEY_NAME}")
        )
    name = _check_name(key, path, "")
    return _check_length("Metric name", MAX_ENTITY_KEY_LENGTH, name)


def is_numeric(value: object) -> bool:
    """True for numbers MLflow accepts as metric values (bool is not one)."""
    return not isinstance(value, bool) and isinstance(value, numbers.Number)


def validate_metric_value(key: str, value: object, timestamp_ms: int, prefix: str = "") -> float:
    """Checks a metric value and returns it as a float (NaN and ±inf are kept)."""
    path = json_path(prefix, "value")
    if value is None:
        raise MlflowException.invalid_parameter_value(
            f"Missing value for required parameter '{path}'."
        )
    if not is_numeric(value):
        message = (
            f"(timestamp={timestamp_ms}). "
            "Please specify value as a valid double (64-bit floating point)"
        )
        raise MlflowException.invalid_parameter_value(invalid_value(path, value, message))
    return float(value)  # type: ignore[arg-type]


def validate_step_and_timestamp(
    key: str, value: float, step: object, timestamp_ms: object, prefix: str = ""
) -> None:
    """Checks a metric's step and timestamp as MLflow does (64-bit integers)."""
    if (
        isinstance(timestamp_ms, bool)
        or not isinstance(timestamp_ms, numbers.Integral)
        or not 0 <= int(timestamp_ms) <= MAX_INT64
    ):
        message = (
            f"metric '{key}' (value={value}). "
            "Timestamp must be a nonnegative long (64-bit integer) "
        )
        raise MlflowException.invalid_parameter_value(
            invalid_value(json_path(prefix, "timestamp"), timestamp_ms, message)
        )
    if (
        isinstance(step, bool)
        or not isinstance(step, numbers.Integral)
        or not MIN_INT64 <= int(step) <= MAX_INT64
    ):
        message = f"metric '{key}' (value={value}). Step must be a valid long (64-bit integer)."
        raise MlflowException.invalid_parameter_value(
            invalid_value(json_path(prefix, "step"), step, message)
        )


def validate_param(key: object, value: str, *, truncate: bool = True, prefix: str = "") -> str:
    """Checks a param's key and value; returns the value, truncated where MLflow truncates."""
    path = json_path(prefix, "key")
    name = _check_name(key, path, invalid_value(path, "", _MISSING_KEY_NAME))
    _check_length("Param key", MAX_ENTITY_KEY_LENGTH, name)
    return _check_length(
        "Param value", MAX_PARAM_VAL_LENGTH, check_encodable(value), truncate=truncate
    )


def validate_tag(
    key: object,
    value: str,
    *,
    truncate: bool = True,
    prefix: str = "",
    allowed_reserved: frozenset[str] = frozenset(),
) -> str:
    """Checks a tag's key and value; returns the value, truncated where MLflow truncates.

    A key under ``trackbridge.`` is refused (INVALID_PARAMETER_VALUE) unless it is one of
    ``allowed_reserved``: those tags are the receivers' (see ``RESERVED_TAG_PREFIX``).
    """
    path = json_path(prefix, "key")
    name = _check_name(key, path, f"Missing value for required parameter '{path}'.")
    _check_length(path, MAX_ENTITY_KEY_LENGTH, name)
    if name.startswith(RESERVED_TAG_PREFIX) and name not in allowed_reserved:
        raise MlflowException.invalid_parameter_value(reserved_tag_message(path, name))
    path = json_path(prefix, "value")
    return _check_length(path, MAX_TAG_VAL_LENGTH, check_encodable(value), truncate=truncate)


def reserved_tag_message(path: str, key: str) -> str:
    """MLflow-style words for a tag key that only receivers may set."""
    return invalid_value(
        path,
        key,
        f"tag keys starting with '{RESERVED_TAG_PREFIX}' are reserved: the trackbridge receiver"
        " sets them (they name the run's owner); use another key",
    )


def validate_experiment_name(name: object) -> str:
    """Checks an experiment name as MLflow's tracking store does (mlflow/utils/validation.py
    ``_validate_experiment_name``): a non-empty string of at most 500 characters."""
    if name == "" or name is None:
        raise MlflowException.invalid_parameter_value(f"Invalid experiment name: '{name}'")
    if not isinstance(name, str):
        raise MlflowException.invalid_parameter_value(
            f"Invalid experiment name: {name}. Expects a string."
        )
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH:
        raise MlflowException.invalid_parameter_value(
            f"'name' exceeds the maximum length of {MAX_EXPERIMENT_NAME_LENGTH} characters"
        )
    return check_encodable(name)


_RUN_ID_RE = re.compile(r"^[a-zA-Z0-9][\w\-]{0,255}$")


def validate_run_id(run_id: object, path: str = "run_id") -> str:
    """Checks an MLflow run id's shape, as MLflow does."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise MlflowException.invalid_parameter_value(invalid_value(path, run_id))
    return run_id


def verify_artifact_path(artifact_path: str | None) -> None:
    """Refuses an artifact path that is absolute or escapes the run's artifacts (MLflow's check
    and wording; MLflow raises it with INTERNAL_ERROR)."""
    if artifact_path and _path_not_unique(artifact_path):
        norm = posixpath.normpath(artifact_path)
        raise MlflowException(
            f"Invalid artifact path: '{artifact_path}'. Names may be treated as files in certain"
            " cases, and must not resolve to other names when treated as such. This name would"
            f" resolve to {norm!r}"
        )


def check_param_unchanged(logged: Mapping[str, str], key: str, value: str, run_id: str) -> None:
    """Raises MLflow's error when a param is logged again with another value."""
    old = logged.get(key)
    if old is not None and old != value:
        raise MlflowException.invalid_parameter_value(
            f"Changing param values is not allowed. Param with key='{key}' was already logged"
            f" with value='{old}' for run ID='{run_id}'. Attempted logging new value '{value}'."
        )
