"""``client_sdk.mlflow`` with the mlflow package installed: MLflow itself, pointed at the
receiver through the ``trackbridge`` tracking-store, artifact and registry plugins.

Importing this module sets MLflow's tracking and registry URIs to ``trackbridge://<receiver>``
(exactly what ``mlflow.set_tracking_uri`` does: the process's MLflow settings and its
``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI``, which subprocesses inherit), so every MLflow
call of the process, through this module or ``import mlflow`` alike, reaches the receiver and
nothing else. ``log_metric`` and ``log_metrics`` skip MLflow's per-call client setup and go
straight to the writer when they can (a run of this process, no model or dataset involved);
everything else is MLflow's own function.

MLflow's telemetry is left as the user set it (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``):
it is MLflow's outbound channel, not the bridge's, and changing it would change the user's
environment (docs/how-to/zero-code.md).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import mlflow as _mlflow
from mlflow.tracking import fluent as _fluent
from mlflow.tracking._tracking_service import utils as _tracking_utils
from mlflow.utils.async_logging.run_operations import RunOperations

from bridge import envvars
from client_sdk._compat.addressing import SCHEME, receiver_of
from client_sdk._rounds import RoundDefault
from client_sdk.config import DEFAULT_RECEIVER
from client_sdk.plugin.store import TrackbridgeStore, configure_sessions

_logger = logging.getLogger(__name__)

__all__ = [
    "configure",
    "exceptions",
    "federated_round",
    "flush",
    "flush_async_logging",
    "get_tracking_uri",
    "log_metric",
    "log_metrics",
    "set_tracking_uri",
]

exceptions = _mlflow.exceptions
_REGISTRY_URI = "MLFLOW_REGISTRY_URI"
_given: dict[str, str] = {}
"""``uri``: a non-trackbridge URI given to set_tracking_uri, shown by get_tracking_uri."""


def _receiver_uri(env: Mapping[str, str] = os.environ) -> str:
    uri = env.get(envvars.MLFLOW_TRACKING_URI, "")
    if uri.startswith(SCHEME):
        return uri.rstrip("/")
    return f"{SCHEME}{env.get(envvars.TRACKBRIDGE_RECEIVER, DEFAULT_RECEIVER)}"


def _point_at(uri: str, *, keep_environment: bool = True) -> None:
    # MLflow's set_tracking_uri and set_registry_uri also write MLFLOW_TRACKING_URI and
    # MLFLOW_REGISTRY_URI into os.environ (for the processes a script starts). A script that
    # calls set_tracking_uri itself gets the first, as with MLflow; pointing MLflow at the
    # receiver on import or in configure() leaves the program's environment as it was.
    names = [_REGISTRY_URI] + ([envvars.MLFLOW_TRACKING_URI] if keep_environment else [])
    saved = {name: os.environ.get(name) for name in names}
    _mlflow.set_tracking_uri(uri)
    _mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def set_tracking_uri(uri: str) -> None:
    """Points MLflow at a receiver: ``trackbridge://host:port`` (or ``host:port``).

    Other tracking URIs (an MLflow server's ``http://...``, ``file:``, ``sqlite:``) are kept
    for ``get_tracking_uri`` but logging stays with the receiver: only the receiver talks to
    MLflow.
    """
    text = str(uri)
    receiver = receiver_of(text)
    if receiver is None:
        _given["uri"] = text
        _logger.warning(
            "trackbridge: tracking URI %s kept for get_tracking_uri(); logging still goes to the"
            " receiver (%s)",
            text,
            _mlflow.get_tracking_uri(),
        )
        return
    _given.pop("uri", None)
    _point_at(f"{SCHEME}{receiver}", keep_environment=False)  # as mlflow.set_tracking_uri


def get_tracking_uri() -> str:
    """``trackbridge://<receiver>``, or the URI given to ``set_tracking_uri``."""
    given = _given.get("uri")
    return given if given is not None else str(_mlflow.get_tracking_uri())


def configure(
    *,
    receiver: str | None = None,
    client_id: str | None = None,
    job: str | None = None,
    rank_zero_only: bool | None = None,
) -> None:
    """trackbridge's own settings (no MLflow equivalent); call before logging.

    Args:
        receiver: ``host:port`` of the receiver (as ``set_tracking_uri``).
        client_id: This client's id (else ``TRACKBRIDGE_CLIENT_ID``, else the host name).
        job: The job (else ``TRACKBRIDGE_JOB``).
        rank_zero_only: In a distributed job, only rank 0 logs (else
            ``TRACKBRIDGE_RANK_ZERO_ONLY``).
    """
    configure_sessions(client_id=client_id, job=job, rank_zero_only=rank_zero_only)
    if receiver is not None:
        _point_at(f"{SCHEME}{receiver}")


def _store() -> TrackbridgeStore | None:
    store = _tracking_utils._get_store()  # type: ignore[no-untyped-call]
    return store if isinstance(store, TrackbridgeStore) else None


def flush(timeout_s: float = 30.0) -> bool:
    """Waits until the receiver has everything logged so far (trackbridge's addition)."""
    store = _store()
    return store.session.flush(timeout_s) if store is not None else True


def flush_async_logging() -> None:
    """As MLflow's, then waits (up to a minute) until the receiver has what was logged."""
    _mlflow.flush_async_logging()
    flush(60.0)


def federated_round(
    round: int,
    num_examples: int | None = None,
) -> AbstractContextManager[RoundDefault]:
    """``with mlflow.federated_round(3, num_examples=600):`` gives the metrics logged in the
    block that round and weight (trackbridge's addition; docs/how-to/rounds.md).

    Raises:
        MlflowException: INVALID_PARAMETER_VALUE for a round or count that is not a positive
            integer, or when MLflow logs somewhere else than a receiver.
    """
    store = _store()
    if store is None:
        raise _mlflow.exceptions.MlflowException.invalid_parameter_value(
            "federated_round needs MLflow pointed at a trackbridge receiver"
            f" (tracking URI {_mlflow.get_tracking_uri()})"
        )
    return store.session.writer.federated_round(round, num_examples)


def _fast_run() -> tuple[TrackbridgeStore, str] | None:
    """The store and active run for the writer's path: a plain metric of a run of this
    process (no active model, no model outputs to attach it to)."""
    if _fluent.get_active_model_id() is not None:
        return None
    store = _store()
    if store is None:
        return None
    run = _fluent._get_or_start_run()  # type: ignore[no-untyped-call]
    if run.outputs is not None and run.outputs.model_outputs:
        return None
    return store, run.info.run_id


def _done(synchronous: bool | None) -> RunOperations | None:
    return RunOperations([]) if synchronous is False else None  # type: ignore[no-untyped-call]


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
    """MLflow's ``log_metric``; a plain point of the active run is appended to the writer."""
    if run_id is None and model_id is None and dataset is None:
        fast = _fast_run()
        if fast is not None and fast[0].fast_metric(fast[1], key, value, step, timestamp):
            return _done(synchronous)
    result: RunOperations | None = _mlflow.log_metric(
        key, value, step, synchronous, timestamp, run_id, model_id, dataset
    )
    return result


def log_metrics(  # noqa: PLR0917 - MLflow's signature
    metrics: Mapping[str, Any],
    step: int | None = None,
    synchronous: bool | None = None,
    run_id: str | None = None,
    timestamp: int | None = None,
    model_id: str | None = None,
    dataset: Any = None,
) -> RunOperations | None:
    """MLflow's ``log_metrics``; plain points of the active run go to the writer."""
    if run_id is None and model_id is None and dataset is None:
        fast = _fast_run()
        if fast is not None and fast[0].fast_metrics(fast[1], metrics, step, timestamp):
            return _done(synchronous)
    result: RunOperations | None = _mlflow.log_metrics(
        dict(metrics), step, synchronous, run_id, timestamp, model_id, dataset
    )
    return result


def __getattr__(name: str) -> Any:
    # Everything else is MLflow's own: functions, MlflowClient, entities, flavors (submodules).
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return getattr(_mlflow, name)
    except AttributeError:
        try:
            return importlib.import_module(f"mlflow.{name}")
        except ModuleNotFoundError:
            raise AttributeError(f"module 'mlflow' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*__all__, *dir(_mlflow)})


_point_at(_receiver_uri())
