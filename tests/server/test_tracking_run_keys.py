"""A client that had no MLflow run id in time names its run by its key (the client SDK says
"both are accepted wherever a run id is"): the receiver answers such calls for the MLflow run
the key stands for, in-process against a fake MLflow store."""

from __future__ import annotations

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
