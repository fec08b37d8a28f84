"""A client that had no MLflow run id in time names its run by its key (the client SDK says
"both are accepted wherever a run id is"): the receiver answers such calls for the MLflow run
the key stands for, in-process against a fake MLflow store."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from mlflow.entities import Run, RunData, RunInfo, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos import service_pb2 as pb

from server.tracking.calls import answer
from server.tracking.reads import Context
from server.tracking.scope import TAG_CLIENT_ID, TAG_JOB, Caller, ReadScope

pytestmark = pytest.mark.timeout(30)


class Store:
    """MLflow's tracking store, holding one run of client ``c``."""

    def get_run(self, run_id: str) -> Run:
        if run_id != "mlflow-run-1":
            raise MlflowException(f"Run with id={run_id} not found", error_code=1000)
        info = RunInfo("mlflow-run-1", "0", "c", "RUNNING", 1, None, "active", "file:///a")  # type: ignore[no-untyped-call]
        tags = [RunTag(TAG_CLIENT_ID, "c"), RunTag(TAG_JOB, "j")]
        return Run(info, RunData(tags=tags))  # type: ignore[no-untyped-call]


def _context(keys: dict[str, str]) -> Context:
    return Context(
        store=Store(),
        registry=lambda: None,
        caller=Caller("c", "j", ReadScope.OWN),
        experiments_of=lambda caller: set(),
        artifact_location=None,
        tracking_uri="http://127.0.0.1:9",
        run_id_of_key=lambda key: keys.get(key, ""),
    )


def _get_run(ctx: Context, run_id: str) -> Any:
    payload = answer(
        ctx, pb.GetRun.DESCRIPTOR.full_name, pb.GetRun(run_id=run_id).SerializeToString()
    )
    return pb.GetRun.Response.FromString(payload)


def test_a_call_naming_a_run_by_its_key_reaches_the_mlflow_run() -> None:
    ctx = _context({"run-key-1": "mlflow-run-1"})
    assert _get_run(ctx, "run-key-1").run.info.run_id == "mlflow-run-1"
    assert _get_run(ctx, "mlflow-run-1").run.info.run_id == "mlflow-run-1"


def test_a_key_with_no_mlflow_run_yet_is_answered_as_mlflow_answers() -> None:
    with pytest.raises(MlflowException, match="not found"):
        _get_run(_context({}), "run-key-1")


class CountingStore(Store):
    """The same store, counting the run lookups; every metric history is empty."""

    def __init__(self) -> None:
        self.run_lookups = 0

    def get_run(self, run_id: str) -> Run:
        self.run_lookups += 1
        return super().get_run(run_id)

    def get_metric_history(self, run_id: str, key: str, **_: Any) -> list[Any]:
        return []


def test_a_read_by_run_id_looks_the_run_up_once_per_caller_and_still_refuses_others() -> None:
    """A metric's history read right after each logged point (a script checking its own
    writes) costs MLflow the history alone after the first read: whether the caller sees the
    run is decided by tags only receivers set, once (server/tracking/reads.py SeenRuns). A
    caller outside the run's scope is still refused, every time."""
    store = CountingStore()
    mine = dataclasses.replace(_context({}), store=store)
    other = dataclasses.replace(mine, caller=Caller("d", "j", ReadScope.OWN))
    call = pb.GetMetricHistory.DESCRIPTOR.full_name
    request = pb.GetMetricHistory(run_id="mlflow-run-1", metric_key="loss").SerializeToString()
    for _ in range(3):
        answer(mine, call, request)
    assert store.run_lookups == 1
    for _ in range(2):
        with pytest.raises(MlflowException, match="mlflow-run-1"):
            answer(other, call, request)
    assert store.run_lookups == 3
