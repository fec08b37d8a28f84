"""When a read through the receiver stops waiting for its caller's writes (server/tracking):
never while MLflow takes writes, however slowly, short of the caller's deadline; after
``FRESH_WAIT_S`` of MLflow failing."""

from __future__ import annotations

import pytest

from server.tracking import service
from server.tracking.service import FRESH_WAIT_S, stop_waiting


@pytest.mark.parametrize("waited", [0.0, FRESH_WAIT_S, 10 * FRESH_WAIT_S])
def test_a_read_waits_while_mlflow_takes_writes(waited: float) -> None:
    assert stop_waiting(waited, None, limit_s=10 * FRESH_WAIT_S + 1) == ""


def test_a_read_answers_once_mlflow_has_failed_for_the_bound() -> None:
    assert stop_waiting(30.0, FRESH_WAIT_S - 0.1, limit_s=59.0) == ""
    assert stop_waiting(30.0, FRESH_WAIT_S, limit_s=59.0) == "MLflow failing"


def test_a_read_answers_before_its_callers_deadline() -> None:
    assert stop_waiting(58.9, None, limit_s=59.0) == ""
    assert stop_waiting(59.0, None, limit_s=59.0) == "its deadline near"
    assert stop_waiting(0.0, None, limit_s=0.0) == "its deadline near"  # no time left at all


def test_mlflow_failing_ends_a_wait_at_once_with_a_zero_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "FRESH_WAIT_S", 0.0)
    assert stop_waiting(0.0, None, limit_s=59.0) == ""  # not failing: it waits on
    assert stop_waiting(0.0, 0.0, limit_s=59.0) == "MLflow failing"
