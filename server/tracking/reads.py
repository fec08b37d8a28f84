"""Read calls, answered from the receiver's MLflow store within the caller's scope."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos import service_pb2 as pb
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from server.artifacts.access import artifact_repository
from server.tracking.entities import experiment_proto, model_proto, model_uri, run_proto, run_uri
from server.tracking.scope import Caller


class SeenRuns:
    """The runs each caller was found to see. What decides it (a run's client and job tags) is
    the receivers' alone to set and never changes, so a read by run id (a metric's history
    right after logging it) asks MLflow for the run once per caller, not before every read."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._seen: OrderedDict[tuple[Caller, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[Caller, str]) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return True
            return False

    def add(self, key: tuple[Caller, str]) -> None:
        """Remembers a run a caller sees; the least recently asked go past ``size``."""
        with self._lock:
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)


@dataclass(frozen=True)
class Context:
    """What a call is answered with."""

    store: Any
    """The receiver's MLflow tracking store."""
    registry: Callable[[], Any]
    """The receiver's MLflow model-registry store (made at first use)."""
    caller: Caller
    experiments_of: Callable[[Caller], set[str]]
    """Experiment ids holding runs in the caller's scope (used when it cannot read all)."""
    artifact_location: str | None
    """Artifact location of experiments the receiver creates (None: MLflow's default)."""
    tracking_uri: str
    """The receiver's MLflow, which artifact locations (``mlflow-artifacts:/``) resolve against."""
    run_id_of_key: Callable[[str], str] = lambda key: ""
    """The MLflow id of one of the caller's runs named by its key ("" if none or not yet)."""
    seen: SeenRuns = field(default_factory=SeenRuns)
    """Runs callers were found to see (the receiver's, shared by its calls)."""


def visible_run(ctx: Context, run_id: str) -> Any:
    """The run, if the caller may read it."""
    run = ctx.store.get_run(run_id)
    if not ctx.caller.sees(run.data.tags):
        raise ctx.caller.refuse(f"Run {run_id}")
    return run


def check_visible(ctx: Context, run_id: str) -> None:
    """Raises unless the caller may read the run (:func:`visible_run`, once per caller and
    run: :class:`SeenRuns`)."""
    key = (ctx.caller, run_id)
    if key not in ctx.seen:
        visible_run(ctx, run_id)
        ctx.seen.add(key)


def model_visible(ctx: Context, model: Any) -> bool:
    """Whether the caller may read a logged model (its tags, else its source run, say so)."""
    if ctx.caller.sees(model.tags):
        return True
    if model.source_run_id:
        try:
            check_visible(ctx, model.source_run_id)
            return True
        except MlflowException:
            return False
    return False


def visible_model(ctx: Context, model_id: str) -> Any:
    """The logged model, if the caller may read it."""
    model = ctx.store.get_logged_model(model_id)
    if not model_visible(ctx, model):
        raise ctx.caller.refuse(f"Logged model {model_id}")
    return model


def get_run(ctx: Context, req: pb.GetRun) -> pb.GetRun.Response:
    response = pb.GetRun.Response()
    response.run.CopyFrom(run_proto(visible_run(ctx, req.run_id or req.run_uuid)))
    return response


def search_runs(ctx: Context, req: pb.SearchRuns) -> pb.SearchRuns.Response:
    view = ViewType.from_proto(req.run_view_type) if req.HasField("run_view_type") else 1  # type: ignore[arg-type]
    runs = ctx.store.search_runs(
        list(req.experiment_ids),
        ctx.caller.run_filter(req.filter),
        view,
        max_results=req.max_results,
        order_by=list(req.order_by),
        page_token=req.page_token or None,
    )
    response = pb.SearchRuns.Response()
    response.runs.extend(run_proto(r) for r in runs if ctx.caller.sees(r.data.tags))
    if runs.token:
        response.next_page_token = runs.token
    return response


def search_experiments(ctx: Context, req: pb.SearchExperiments) -> pb.SearchExperiments.Response:
    found = ctx.store.search_experiments(
        view_type=req.view_type,
        max_results=req.max_results,
        filter_string=req.filter or None,
        order_by=list(req.order_by),
        page_token=req.page_token or None,
    )
    # Experiments' metadata is visible to every caller (server/tracking/scope.py): the list is
    # MLflow's, as get_experiment(_by_name) answers for each of them; their runs are scoped.
    response = pb.SearchExperiments.Response()
    response.experiments.extend(experiment_proto(e) for e in found)
    if found.token:
        response.next_page_token = found.token
    return response


def get_experiment(ctx: Context, req: pb.GetExperiment) -> pb.GetExperiment.Response:
    response = pb.GetExperiment.Response()
    response.experiment.CopyFrom(experiment_proto(ctx.store.get_experiment(req.experiment_id)))
    return response


def get_experiment_by_name(
    ctx: Context, req: pb.GetExperimentByName
) -> pb.GetExperimentByName.Response:
    experiment = ctx.store.get_experiment_by_name(req.experiment_name)
    if experiment is None:
        raise MlflowException(
            f"Could not find experiment with name '{req.experiment_name}'",
            error_code=RESOURCE_DOES_NOT_EXIST,
        )
    response = pb.GetExperimentByName.Response()
    response.experiment.CopyFrom(experiment_proto(experiment))
    return response


def get_metric_history(ctx: Context, req: pb.GetMetricHistory) -> pb.GetMetricHistory.Response:
    run_id = req.run_id or req.run_uuid
    check_visible(ctx, run_id)
    metrics = ctx.store.get_metric_history(
        run_id,
        req.metric_key,
        max_results=req.max_results if req.HasField("max_results") else None,
        page_token=req.page_token or None,
    )
    response = pb.GetMetricHistory.Response()
    response.metrics.extend(m.to_proto() for m in metrics)
    token = getattr(metrics, "token", None)
    if token:
        response.next_page_token = token
    return response


def list_artifacts(ctx: Context, req: pb.ListArtifacts) -> pb.ListArtifacts.Response:
    run_id = req.run_id or req.run_uuid
    run = visible_run(ctx, run_id)
    files = artifact_repository(run.info.artifact_uri, ctx.tracking_uri).list_artifacts(
        req.path or None
    )
    response = pb.ListArtifacts.Response(root_uri=run_uri(run_id))
    response.files.extend(f.to_proto() for f in files)
    return response


def list_model_artifacts(
    ctx: Context, req: pb.ListLoggedModelArtifacts
) -> pb.ListLoggedModelArtifacts.Response:
    model = visible_model(ctx, req.model_id)
    repo = artifact_repository(model.artifact_location, ctx.tracking_uri)
    files = repo.list_artifacts(req.artifact_directory_path or None)
    response = pb.ListLoggedModelArtifacts.Response(root_uri=model_uri(req.model_id))
    response.files.extend(f.to_proto() for f in files)
    return response


def get_logged_model(ctx: Context, req: pb.GetLoggedModel) -> pb.GetLoggedModel.Response:
    response = pb.GetLoggedModel.Response()
    response.model.CopyFrom(model_proto(visible_model(ctx, req.model_id)))
    return response


def search_logged_models(
    ctx: Context, req: pb.SearchLoggedModels
) -> pb.SearchLoggedModels.Response:
    datasets = [
        {"dataset_name": d.dataset_name, "dataset_digest": d.dataset_digest or None}
        for d in req.datasets
    ]
    order_by = [
        {
            "field_name": o.field_name,
            "ascending": o.ascending,
            "dataset_name": o.dataset_name or None,
            "dataset_digest": o.dataset_digest or None,
        }
        for o in req.order_by
    ]
    models = ctx.store.search_logged_models(
        experiment_ids=list(req.experiment_ids),
        filter_string=req.filter or None,
        datasets=datasets or None,
        max_results=req.max_results or None,
        order_by=order_by or None,
        page_token=req.page_token or None,
    )
    response = pb.SearchLoggedModels.Response()
    response.models.extend(model_proto(m) for m in models if model_visible(ctx, m))
    if models.token:
        response.next_page_token = models.token
    return response
