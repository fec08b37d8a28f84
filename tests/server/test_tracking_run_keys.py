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
from server.tracking.run_filters import with_run_ids
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


class SearchingStore(Store):
    """The same store, keeping the filter of each run search."""

    def __init__(self) -> None:
        self.filters: list[str] = []

    def search_runs(self, _experiment_ids: Any, filter_string: str, *_: Any, **__: Any) -> Any:
        from mlflow.store.entities.paged_list import PagedList

        self.filters.append(filter_string)
        return PagedList([], None)


def test_a_search_naming_a_run_by_its_key_searches_for_the_mlflow_run() -> None:
    """``mlflow.load_table(..., run_ids=[run.info.run_id])`` searches ``attributes.run_id IN
    (...)``: each of the caller's keys compared with a run id column becomes its MLflow run
    id; a tag's value equal to a key, a LIKE pattern and an unknown id stay as written."""
    store = SearchingStore()
    ctx = dataclasses.replace(_context({"run-key-1": "mlflow-run-1"}), store=store)
    written = (
        "tags.`mlflow.loggedArtifacts` LIKE '%run-key-1%' and attributes.run_id IN"
        " ('run-key-1', 'other-run') and tags.run_id = 'run-key-1' and tags.x != \"run-key-1\""
    )
    request = pb.SearchRuns(experiment_ids=["0"], filter=written).SerializeToString()
    answer(ctx, pb.SearchRuns.DESCRIPTOR.full_name, request)
    (searched,) = store.filters
    assert searched.startswith(
        written.replace("('run-key-1', 'other-run')", "('mlflow-run-1', 'other-run')")
    )
    for written, meant in (
        ("run_id = 'run-key-1'", "run_id = 'mlflow-run-1'"),
        ('attributes.`run_id` != "run-key-1"', 'attributes.`run_id` != "mlflow-run-1"'),
        ("run.run_id='run-key-1' and metrics.m > 1", "run.run_id='mlflow-run-1' and metrics.m > 1"),
        ("source_run_id = 'run-key-1'", "source_run_id = 'mlflow-run-1'"),
        ("attributes.run_id LIKE 'run-key-1%'", "attributes.run_id LIKE 'run-key-1%'"),
    ):
        assert with_run_ids(written, ctx.run_id_of_key) == meant


class Registry:
    """MLflow's model registry, keeping what each version was created with."""

    def __init__(self) -> None:
        self.created: list[tuple[str, str]] = []

    def create_model_version(self, name: str, source: str, run_id: str, **_: Any) -> Any:
        from mlflow.entities.model_registry import ModelVersion

        self.created.append((source, run_id))
        return ModelVersion(name, "1", 1, source=source, run_id=run_id)  # type: ignore[no-untyped-call]


def test_a_version_registered_from_a_runs_uri_naming_the_key_points_at_the_mlflow_run() -> None:
    """``mlflow.register_model(f"runs:/{run.info.run_id}/model", ...)`` from a run going by
    its key registers the MLflow run's model."""
    from mlflow.protos import model_registry_pb2 as rpb

    registry = Registry()
    ctx = dataclasses.replace(_context({"run-key-1": "mlflow-run-1"}), registry=lambda: registry)
    request = rpb.CreateModelVersion(name="m", source="runs:/run-key-1/model/data")
    payload = answer(ctx, rpb.CreateModelVersion.DESCRIPTOR.full_name, request.SerializeToString())
    assert registry.created == [("runs:/mlflow-run-1/model/data", "mlflow-run-1")]
    reply = rpb.CreateModelVersion.Response.FromString(payload)
    assert reply.model_version.run_id == "mlflow-run-1"
