"""MLflow's API, logging through a trackbridge receiver: ``import client_sdk.mlflow as mlflow``.

One behaviour per environment:

- **With the mlflow package installed** this module *is* MLflow pointed at the receiver
  (``client_sdk/plugin/fluent.py``, beside the rest of the code that needs mlflow):
  ``mlflow.sklearn``, ``mlflow.pytorch``, ``MlflowClient``, autolog, datasets, ``log_model``
  and every other attribute are MLflow's own, and the tracking (and registry) URI
  is ``trackbridge://<receiver>``, so that an ``import mlflow.sklearn`` after the swap, which
  rebinds the name ``mlflow`` to the real package, still logs only to the receiver. Runs live on
  MLflow's own active-run stack; ``log_metric``/``log_metrics`` take a microsecond path to the
  writer.
- **Without it** (a light client: grpcio and protobuf only) the fluent logging calls are
  trackbridge's own (``_light.py``), with MLflow's names, arguments, return values and errors;
  anything else raises an error naming ``pip install mlflow``.

The calls both faces have (``set_tracking_uri``, ``get_tracking_uri``, ``configure``, ``flush``,
``flush_async_logging``, ``federated_round``, ``log_metric``, ``log_metrics``) are written once,
in ``client_sdk/_compat/fluent.py``; each face supplies a backend for what really differs.

The receiver's address comes from ``set_tracking_uri("trackbridge://host:port")``,
``MLFLOW_TRACKING_URI=trackbridge://...`` or ``TRACKBRIDGE_RECEIVER``. See
docs/how-to/zero-code.md for what still differs.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType
from typing import Any


def _installed() -> bool:
    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # set to None in sys.modules: treated as not installed
        return False


def _implementation() -> ModuleType:
    if _installed():
        from client_sdk.plugin import fluent

        return fluent
    from client_sdk.mlflow import _light

    return _light


_impl = _implementation()
__all__ = list(_impl.__all__)
globals().update({name: getattr(_impl, name) for name in __all__})


def __getattr__(name: str) -> Any:
    return _impl.__getattr__(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_impl.__dir__()})
