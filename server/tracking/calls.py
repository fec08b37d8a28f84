"""The calls the receiver answers, by MLflow's request message name, and how one is answered.

Anything else (traces, assessments, scorers, evaluation datasets, gateway, MCP registry,
workspaces, experiment deletion and renaming) gets MLflow's NOT_IMPLEMENTED with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message
from mlflow.exceptions import MlflowException
from mlflow.protos import model_registry_pb2 as rpb
from mlflow.protos import service_pb2 as pb
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, NOT_IMPLEMENTED

from server.tracking import reads, registry, writes
from server.tracking.reads import Context
from server.tracking.run_filters import with_run_ids

Handler = Callable[[Context, Any], Message]

HANDLERS: dict[str, tuple[type[Message], Handler]] = {
    message.DESCRIPTOR.full_name: (message, handler)
    for message, handler in (
        (pb.GetRun, reads.get_run),
        (pb.SearchRuns, reads.search_runs),
        (pb.SearchExperiments, reads.search_experiments),
        (pb.GetExperiment, reads.get_experiment),
        (pb.GetExperimentByName, reads.get_experiment_by_name),
        (pb.GetMetricHistory, reads.get_metric_history),
        (pb.ListArtifacts, reads.list_artifacts),
        (pb.ListLoggedModelArtifacts, reads.list_model_artifacts),
        (pb.GetLoggedModel, reads.get_logged_model),
        (pb.SearchLoggedModels, reads.search_logged_models),
        (pb.CreateExperiment, writes.create_experiment),
        (pb.SetExperimentTag, writes.set_experiment_tag),
        (pb.DeleteExperimentTag, writes.delete_experiment_tag),
        (pb.DeleteRun, writes.delete_run),
        (pb.RestoreRun, writes.restore_run),
        (pb.LogInputs, writes.log_inputs),
        (pb.LogOutputs, writes.log_outputs),
        (pb.LogBatch, writes.log_batch),
        (pb.CreateLoggedModel, writes.create_logged_model),
        (pb.FinalizeLoggedModel, writes.finalize_logged_model),
        (pb.SetLoggedModelTags, writes.set_logged_model_tags),
        (pb.DeleteLoggedModelTag, writes.delete_logged_model_tag),
        (pb.LogLoggedModelParamsRequest, writes.log_logged_model_params),
        (pb.DeleteLoggedModel, writes.delete_logged_model),
        (rpb.CreateRegisteredModel, registry.create_registered_model),
        (rpb.GetRegisteredModel, registry.get_registered_model),
        (rpb.SearchRegisteredModels, registry.search_registered_models),
        (rpb.GetLatestVersions, registry.get_latest_versions),
        (rpb.CreateModelVersion, registry.create_model_version),
        (rpb.GetModelVersion, registry.get_model_version),
        (rpb.SearchModelVersions, registry.search_model_versions),
        (rpb.GetModelVersionDownloadUri, registry.get_model_version_download_uri),
        (rpb.GetModelVersionByAlias, registry.get_model_version_by_alias),
        (rpb.SetRegisteredModelTag, registry.set_registered_model_tag),
        (rpb.SetModelVersionTag, registry.set_model_version_tag),
        (rpb.SetRegisteredModelAlias, registry.set_registered_model_alias),
    )
}


def decode(method: str, payload: bytes) -> tuple[Message, Handler]:
    """The request message of a call and its handler; MLflow's error for an unknown call."""
    entry = HANDLERS.get(method)
    if entry is None:
        raise MlflowException(
            f"{method[:100]} is not served through trackbridge receivers (they serve runs,"
            " experiments, metrics, artifacts, logged models and the model registry; traces,"
            " GenAI and gateway calls, and deleting or renaming experiments, need MLflow itself)",
            error_code=NOT_IMPLEMENTED,
        )
    message, handler = entry
    try:
        request = message.FromString(payload)
    except DecodeError as exc:
        raise MlflowException(
            f"cannot decode {method}: {exc}", error_code=INVALID_PARAMETER_VALUE
        ) from None
    return request, handler


_RUN_ID_FIELDS = ("run_id", "run_uuid", "source_run_id")


def answer(ctx: Context, method: str, payload: bytes) -> bytes:
    """Answers one call; raises MlflowException (MLflow's, or the scope's)."""
    request, handler = decode(method, payload)
    for name in _RUN_ID_FIELDS:
        # A client that had no MLflow run id in time goes by its run's key ("both are accepted
        # wherever a run id is"); by now the run may be in MLflow.
        value = getattr(request, name, "") if name in request.DESCRIPTOR.fields_by_name else ""
        if value and (mlflow_id := ctx.run_id_of_key(value)):
            setattr(request, name, mlflow_id)
    if "filter" in request.DESCRIPTOR.fields_by_name:  # the searches' run id clauses too
        request.filter = with_run_ids(request.filter, ctx.run_id_of_key)  # type: ignore[attr-defined]
    return handler(ctx, request).SerializeToString()
