"""The fluent calls both faces of ``client_sdk.mlflow`` have are one implementation
(client_sdk/_compat/fluent.py), driven here in-process through a fake backend; the faces
themselves are tested against real receivers in tests/compat/test_fluent.py and test_plugin.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from bridge.errors import MlflowException
from bridge.events import Metric
from client_sdk._compat.fluent import Fluent
from client_sdk._compat.records import RunRecord
from client_sdk.mlflow import _light
from client_sdk.plugin import fluent as with_mlflow  # at import: mlflow runs `uname -p`

SHARED = (
    "set_tracking_uri",
    "get_tracking_uri",
    "configure",
    "flush",
    "flush_async_logging",
    "federated_round",
    "log_metric",
    "log_metrics",
)


@pytest.mark.timeout(30)
def test_both_faces_bind_the_one_implementation_of_every_call_they_share() -> None:
    both = set(_light.__all__) & set(with_mlflow.__all__)
    common = {name for name in both if callable(getattr(_light, name))}
    assert common == set(SHARED), "a call both faces have belongs in client_sdk/_compat/fluent.py"
    for name in SHARED:
        assert getattr(_light, name).__func__ is getattr(Fluent, name), name
        assert getattr(with_mlflow, name).__func__ is getattr(Fluent, name), name


class _Writer:
    def __init__(self) -> None:
        self.events: list[tuple[object, Metric]] = []

    def enqueue(self, handle: object, event: Metric) -> None:
        self.events.append((handle, event))


class _Session:
    def __init__(self) -> None:
        self.writer = _Writer()
        self.flushed: list[float] = []

    def flush(self, timeout_s: float) -> bool:
        self.flushed.append(timeout_s)
        return False


class _Refused(Exception):
    """The face's own error type, to see that errors go through ``Backend.error``."""


class _Backend:
    """A face whose run and session are set by the test; it records what it was asked."""

    def __init__(self) -> None:
        self.live: _Session | None = None
        self.record: RunRecord | None = None
        self.calls: list[tuple[Any, ...]] = []

    def current_session(self) -> Any:
        return self.live

    def session(self) -> Any:
        assert self.live is not None
        return self.live

    def metric_run(self, run_id: str | None, model_id: str | None, dataset: Any) -> Any:
        self.calls.append(("metric_run", run_id, model_id, dataset))
        return (self.live, self.record) if self.record is not None else None

    def error(self, exc: MlflowException) -> Exception:
        return _Refused(exc.message)

    def operations(self, synchronous: bool | None) -> Any:
        return ("operations", synchronous)

    def unserved(self, call: str, *args: Any) -> Any:
        self.calls.append((call, *args))
        return "mlflow's"

    def drain(self) -> None:
        self.calls.append(("drain",))

    def given_uri(self) -> str | None:
        return None

    def receiver_uri(self) -> str:
        return "trackbridge://r:1"

    def keep_uri(self, uri: str) -> None:
        self.calls.append(("keep_uri", uri))

    def point_at(self, receiver: str, uri: str | None) -> None:
        self.calls.append(("point_at", receiver, uri))

    def configure(self, options: Mapping[str, object]) -> None:
        self.calls.append(("configure", dict(options)))


def _face(with_run: bool = True) -> tuple[Fluent, _Backend]:
    backend = _Backend()
    backend.live = _Session()
    if with_run:
        backend.record = RunRecord(handle=object(), run_name="r", experiment="", start_time_ms=0)  # type: ignore[arg-type]
    return Fluent(backend), backend


@pytest.mark.timeout(30)
def test_log_metrics_checks_every_point_before_logging_any_and_raises_the_faces_error() -> None:
    fluent, backend = _face()
    with pytest.raises(_Refused, match="would resolve to"):
        fluent.log_metrics({"good": 1.0, "": 2.0}, step=3)
    assert backend.live is not None and backend.live.writer.events == []
    assert fluent.log_metrics({"a": 1.0, "b": 2}, step=3, timestamp=5) == ("operations", None)
    logged = [event for _, event in backend.live.writer.events]
    assert [(e.key, e.value, e.step, e.timestamp_ms) for e in logged] == [
        ("a", 1.0, 3, 5),
        ("b", 2.0, 3, 5),
    ]
    assert backend.record is not None and backend.record.metrics == {"a": 1.0, "b": 2.0}


@pytest.mark.timeout(30)
def test_a_metric_call_the_backend_does_not_take_goes_to_unserved_in_mlflows_argument_order() -> (
    None
):
    fluent, backend = _face(with_run=False)
    assert fluent.log_metric("k", 1.0, 2, False, 7, "rid", "mid", "ds") == "mlflow's"
    assert fluent.log_metrics({"k": 1.0}, 2, True, "rid", 7, "mid", "ds") == "mlflow's"
    assert backend.calls == [
        ("metric_run", "rid", "mid", "ds"),
        ("log_metric", "k", 1.0, 2, False, 7, "rid", "mid", "ds"),
        ("metric_run", "rid", "mid", "ds"),
        ("log_metrics", {"k": 1.0}, 2, True, "rid", 7, "mid", "ds"),
    ]


@pytest.mark.timeout(30)
def test_flush_makes_no_session_and_uris_and_options_reach_the_backend() -> None:
    fluent, backend = _face()
    backend.live = None
    assert fluent.flush(5.0) is True  # nothing logged: nothing to wait for, no session made
    backend.live = _Session()
    fluent.flush_async_logging()
    assert backend.live.flushed == [60.0]
    fluent.set_tracking_uri("http://mlflow:5000")
    fluent.set_tracking_uri("trackbridge://r:2/")
    fluent.configure(receiver="r:3", job="j")
    assert fluent.get_tracking_uri() == "trackbridge://r:1"
    assert backend.calls == [
        ("drain",),
        ("keep_uri", "http://mlflow:5000"),
        ("point_at", "r:2", "trackbridge://r:2/"),
        ("configure", {"job": "j"}),
        ("point_at", "r:3", None),
    ]
