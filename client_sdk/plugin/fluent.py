"""``client_sdk.mlflow`` with the mlflow package installed: MLflow itself, pointed at the
receiver through the ``trackbridge`` tracking-store, artifact and registry plugins.

Importing this module sets MLflow's tracking and registry URIs to ``trackbridge://<receiver>``
(exactly what ``mlflow.set_tracking_uri`` does: the process's MLflow settings and its
``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI``, which subprocesses inherit), so every MLflow
call of the process, through this module or ``import mlflow`` alike, reaches the receiver and
nothing else. The calls both faces of ``client_sdk.mlflow`` have are written once
(client_sdk/_compat/fluent.py) over ``_MlflowBackend``: ``log_metric`` and ``log_metrics`` skip
MLflow's per-call client setup and go straight to the writer when they can (a run of this
process, no model or dataset involved); everything else is MLflow's own function.

MLflow's telemetry is left as the user set it (``MLFLOW_DISABLE_TELEMETRY``, ``DO_NOT_TRACK``):
it is MLflow's outbound channel, not the bridge's, and changing it would change the user's
environment (docs/how-to/zero-code.md).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import mlflow as _mlflow
from mlflow.tracking import fluent as _fluent
from mlflow.tracking._tracking_service import utils as _tracking_utils
from mlflow.utils.async_logging.run_operations import RunOperations

from bridge import envvars
from bridge.errors import MlflowException as BridgeMlflowException
from client_sdk._compat.addressing import SCHEME
from client_sdk._compat.fluent import Fluent
from client_sdk._compat.records import RunRecord
from client_sdk._compat.session import Session
from client_sdk.config import DEFAULT_RECEIVER
from client_sdk.plugin.store import TrackbridgeStore, configure_sessions, mlflow_error

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


class _MlflowBackend:
    """MLflow's side of the shared fluent calls (client_sdk/_compat/fluent.py): the session is
    the receiver's store's, runs are MLflow's active runs, errors are MLflow's; a metric call
    the writer does not take (a model, a dataset, a run this process did not start) is
    MLflow's own; a URI that names no receiver is kept with a warning."""

    def current_session(self) -> Session | None:
        store = _store()
        return store.session if store is not None else None

    def session(self) -> Session:
        store = _store()
        if store is None:
            raise _mlflow.exceptions.MlflowException.invalid_parameter_value(
                "federated_round needs MLflow pointed at a trackbridge receiver"
                f" (tracking URI {_mlflow.get_tracking_uri()})"
            )
        return store.session

    def metric_run(
        self, run_id: str | None, model_id: str | None, dataset: Any
    ) -> tuple[Session, RunRecord] | None:
        # The writer's path: a plain metric of a run of this process (no active model, no
        # model outputs to attach it to); MLflow's per-call client setup is skipped.
        if run_id is not None or model_id is not None or dataset is not None:
            return None
        if _fluent.get_active_model_id() is not None:
            return None
        store = _store()
        if store is None:
            return None
        run = _fluent._get_or_start_run()  # type: ignore[no-untyped-call]
        if run.outputs is not None and run.outputs.model_outputs:
            return None
        record = store.session.find(run.info.run_id)
        return (store.session, record) if record is not None else None

    def error(self, exc: BridgeMlflowException) -> Exception:
        return mlflow_error(exc)

    def operations(self, synchronous: bool | None) -> RunOperations | None:
        return RunOperations([]) if synchronous is False else None  # type: ignore[no-untyped-call]

    def unserved(self, call: str, *args: Any) -> Any:
        return getattr(_mlflow, call)(*args)

    def drain(self) -> None:
        _mlflow.flush_async_logging()

    def given_uri(self) -> str | None:
        return _given.get("uri")

    def receiver_uri(self) -> str:
        return str(_mlflow.get_tracking_uri())

    def keep_uri(self, uri: str) -> None:
        _given["uri"] = uri
        _logger.warning(
            "trackbridge: tracking URI %s kept for get_tracking_uri(); logging still goes to the"
            " receiver (%s)",
            uri,
            _mlflow.get_tracking_uri(),
        )

    def point_at(self, receiver: str, uri: str | None) -> None:
        if uri is None:  # configure(receiver=...): the program's environment stays as it was
            _point_at(f"{SCHEME}{receiver}")
            return
        _given.pop("uri", None)
        _point_at(f"{SCHEME}{receiver}", keep_environment=False)  # as mlflow.set_tracking_uri

    def configure(self, options: Mapping[str, object]) -> None:
        configure_sessions(**options)


def _store() -> TrackbridgeStore | None:
    store = _tracking_utils._get_store()  # type: ignore[no-untyped-call]
    return store if isinstance(store, TrackbridgeStore) else None


# The calls both faces of client_sdk.mlflow share (client_sdk/_compat/fluent.py).
_shared = Fluent(_MlflowBackend())
set_tracking_uri = _shared.set_tracking_uri
get_tracking_uri = _shared.get_tracking_uri
configure = _shared.configure
flush = _shared.flush
flush_async_logging = _shared.flush_async_logging
federated_round = _shared.federated_round
log_metric = _shared.log_metric
log_metrics = _shared.log_metrics


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
