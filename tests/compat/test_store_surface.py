"""Zero-code mode implements all of MLflow's tracking store: every method of MLflow's
AbstractStore (and the two that MLflow calls but does not declare there, ``delete_tag`` and
``log_logged_model_params``) is served by the ``trackbridge`` store, works through one of
AbstractStore's own implementations on top of it, or raises MlflowException(NOT_IMPLEMENTED)
with a reason. When a new MLflow adds a method, the first test fails until it is placed."""

from __future__ import annotations

import inspect

import pytest
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.abstract_store import AbstractStore
from mlflow.store.tracking.rest_store import RestStore

from client_sdk.plugin._unserved import EXPERIMENT_CHANGES, GENAI
from client_sdk.plugin.store import TrackbridgeStore

SERVED = frozenset(
    [
        "search_experiments",
        "create_experiment",
        "get_experiment",
        "get_experiment_by_name",
        "set_experiment_tag",
        "delete_experiment_tag",
        "create_run",
        "get_run",
        "update_run_info",
        "delete_run",
        "restore_run",
        "_search_runs",
        "log_batch",
        "log_metric",
        "log_param",
        "set_tag",
        "delete_tag",
        "get_metric_history",
        "log_inputs",
        "log_outputs",
        "record_logged_model",
        "create_logged_model",
        "search_logged_models",
        "finalize_logged_model",
        "set_logged_model_tags",
        "delete_logged_model_tag",
        "get_logged_model",
        "delete_logged_model",
        "log_logged_model_params",
    ]
)
"""Defined by the trackbridge store itself (``record_logged_model`` refuses, with its reason)."""

MLFLOWS_OWN = frozenset(
    [
        "_evenly_spaced_indices",
        "end_async_logging",
        "filter_active_experiment_ids",
        "flush_async_logging",
        "get_metric_history_bulk_interval",
        "get_metric_history_bulk_interval_from_steps",
        "list_scorers_across_experiments",
        "log_batch_async",
        "log_metric_async",
        "log_param_async",
        "log_spans_async",
        "resolve_trace_archival_config",
        "search_runs",
        "set_model_versions_tags",
        "set_tag_async",
        "shut_down_async_logging",
        "delete_traces",
        "supports_trace_archival",
        "supports_workspaces",
    ]
)
"""AbstractStore's concrete methods: built on the store's other methods (log_batch,
_search_runs, get_metric_history, ...), so they work, or refuse, through them."""

CALLED_BUT_UNDECLARED = frozenset({"delete_tag", "log_logged_model_params"})


def _own_names(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("__")}


def test_every_store_method_is_accounted_for() -> None:
    unserved = set(GENAI) | set(EXPERIMENT_CHANGES)
    assert not (SERVED & unserved) and not (SERVED & MLFLOWS_OWN) and not (MLFLOWS_OWN & unserved)
    mlflow_names = _own_names(AbstractStore) | CALLED_BUT_UNDECLARED
    assert mlflow_names == SERVED | MLFLOWS_OWN | unserved
    assert _own_names(RestStore) >= CALLED_BUT_UNDECLARED


def test_no_method_falls_through_to_mlflows_placeholders() -> None:
    """Served and refused methods are the trackbridge store's own, never AbstractStore's
    (whose "abstract" methods return None and the rest raise a bare NotImplementedError)."""
    for name in SERVED | set(GENAI) | set(EXPERIMENT_CHANGES):
        owner = next(c for c in TrackbridgeStore.__mro__ if name in vars(c))
        assert owner.__module__.startswith("client_sdk."), f"{name} comes from {owner}"
    for name in MLFLOWS_OWN:
        owner = next(c for c in TrackbridgeStore.__mro__ if name in vars(c))
        source = inspect.getsource(getattr(owner, name)) if callable(getattr(owner, name)) else ""
        assert "NotImplementedError" not in source, f"{name} is a placeholder in {owner}"


@pytest.mark.parametrize("name", [*GENAI, *EXPERIMENT_CHANGES, "record_logged_model"])
def test_what_is_not_carried_says_why(name: str) -> None:
    store = object.__new__(TrackbridgeStore)  # the refusals need no receiver
    with pytest.raises(MlflowException) as raised:
        getattr(store, name)(*[None] * _required(getattr(TrackbridgeStore, name)))
    assert raised.value.error_code == "NOT_IMPLEMENTED"
    assert raised.value.message.startswith(f"{name}: ")
    assert "trackbridge" in raised.value.message or "MLflow" in raised.value.message


def _required(fn: object) -> int:
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    return sum(
        1
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )
