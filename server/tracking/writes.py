"""Write calls: the ones MLflow must answer at once (ids it hands out: experiments, logged
models), and the ones about runs and models that are not this process's own event stream.
The writes that ride a run's stream are applied by ``journal.py`` with the same functions.

Clients change only what they created: a run or logged model whose ``trackbridge.client_id``
is theirs. Logged models the receiver creates get the caller's ``trackbridge.client_id`` and
``trackbridge.job`` tags, like runs.
"""

from __future__ import annotations

from mlflow.entities import (
    DatasetInput,
    ExperimentTag,
    LoggedModelInput,
    LoggedModelOutput,
    LoggedModelParameter,
    LoggedModelStatus,
    LoggedModelTag,
    Metric,
    Param,
    RunTag,
)
from mlflow.protos import service_pb2 as pb

from server.tracking.entities import model_proto
from server.tracking.reads import Context
from server.tracking.scope import TAG_CLIENT_ID, TAG_JOB

_OURS = "trackbridge."


def _own_run(ctx: Context, run_id: str) -> str:
    run = ctx.store.get_run(run_id)
    if not ctx.caller.owns(run.data.tags):
        raise ctx.caller.refuse_write(f"Run {run_id}")
    return run_id


def _own_model(ctx: Context, model_id: str) -> str:
    model = ctx.store.get_logged_model(model_id, allow_deleted=True)
    if not ctx.caller.owns(model.tags):
        raise ctx.caller.refuse_write(f"Logged model {model_id}")
    return model_id


def _scoped_experiment(ctx: Context, experiment_id: str) -> str:
    if ctx.caller.viewer or (
        not ctx.caller.reads_all and experiment_id not in ctx.experiments_of(ctx.caller)
    ):
        raise ctx.caller.refuse_write(f"Experiment {experiment_id} (it holds no run of its job)")
    return experiment_id


def create_experiment(ctx: Context, req: pb.CreateExperiment) -> pb.CreateExperiment.Response:
    if ctx.caller.viewer:
        raise ctx.caller.refuse_write("An experiment")
    tags = [ExperimentTag(t.key, t.value) for t in req.tags]
    # The artifact location is the receiver's to choose: a client-chosen one would have the
    # receiver write files wherever a client asks.
    experiment_id = ctx.store.create_experiment(req.name, ctx.artifact_location, tags)
    return pb.CreateExperiment.Response(experiment_id=str(experiment_id))


def set_experiment_tag(ctx: Context, req: pb.SetExperimentTag) -> pb.SetExperimentTag.Response:
    experiment_id = _scoped_experiment(ctx, req.experiment_id)
    ctx.store.set_experiment_tag(experiment_id, ExperimentTag(req.key, req.value))
    return pb.SetExperimentTag.Response()


def delete_experiment_tag(
    ctx: Context, req: pb.DeleteExperimentTag
) -> pb.DeleteExperimentTag.Response:
    ctx.store.delete_experiment_tag(_scoped_experiment(ctx, req.experiment_id), req.key)
    return pb.DeleteExperimentTag.Response()


def delete_run(ctx: Context, req: pb.DeleteRun) -> pb.DeleteRun.Response:
    ctx.store.delete_run(_own_run(ctx, req.run_id))
    return pb.DeleteRun.Response()


def restore_run(ctx: Context, req: pb.RestoreRun) -> pb.RestoreRun.Response:
    ctx.store.restore_run(_own_run(ctx, req.run_id))
    return pb.RestoreRun.Response()


def log_inputs(ctx: Context, req: pb.LogInputs) -> pb.LogInputs.Response:
    datasets = [DatasetInput.from_proto(d) for d in req.datasets]
    models = [LoggedModelInput.from_proto(m) for m in req.models] or None
    ctx.store.log_inputs(_own_run(ctx, req.run_id), datasets=datasets, models=models)
    return pb.LogInputs.Response()


def log_outputs(ctx: Context, req: pb.LogOutputs) -> pb.LogOutputs.Response:
    models = [LoggedModelOutput.from_proto(m) for m in req.models]
    ctx.store.log_outputs(_own_run(ctx, req.run_id), models)
    return pb.LogOutputs.Response()


def log_batch(ctx: Context, req: pb.LogBatch) -> pb.LogBatch.Response:
    ctx.store.log_batch(
        _own_run(ctx, req.run_id),
        metrics=[Metric.from_proto(m) for m in req.metrics],
        params=[Param.from_proto(p) for p in req.params],
        tags=[RunTag.from_proto(t) for t in req.tags],
    )
    return pb.LogBatch.Response()


def create_logged_model(ctx: Context, req: pb.CreateLoggedModel) -> pb.CreateLoggedModel.Response:
    if ctx.caller.viewer:
        raise ctx.caller.refuse_write("A logged model")
    if req.source_run_id:
        _own_run(ctx, req.source_run_id)
    tags = [
        LoggedModelTag(t.key, t.value) for t in req.tags if not t.key.startswith("trackbridge.")
    ]
    tags += [
        LoggedModelTag(TAG_CLIENT_ID, ctx.caller.client_id),
        LoggedModelTag(TAG_JOB, ctx.caller.job),
    ]
    model = ctx.store.create_logged_model(
        experiment_id=req.experiment_id,
        name=req.name or None,
        source_run_id=req.source_run_id or None,
        tags=tags,
        params=[LoggedModelParameter.from_proto(p) for p in req.params] or None,
        model_type=req.model_type or None,
    )
    return pb.CreateLoggedModel.Response(model=model_proto(model))


def finalize_logged_model(
    ctx: Context, req: pb.FinalizeLoggedModel
) -> pb.FinalizeLoggedModel.Response:
    model = ctx.store.finalize_logged_model(
        _own_model(ctx, req.model_id), LoggedModelStatus.from_int(req.status)
    )
    return pb.FinalizeLoggedModel.Response(model=model_proto(model))


def set_logged_model_tags(
    ctx: Context, req: pb.SetLoggedModelTags
) -> pb.SetLoggedModelTags.Response:
    tags = [LoggedModelTag(t.key, t.value) for t in req.tags]
    ctx.store.set_logged_model_tags(_own_model(ctx, req.model_id), tags)
    return pb.SetLoggedModelTags.Response()


def delete_logged_model_tag(
    ctx: Context, req: pb.DeleteLoggedModelTag
) -> pb.DeleteLoggedModelTag.Response:
    ctx.store.delete_logged_model_tag(_own_model(ctx, req.model_id), req.tag_key)
    return pb.DeleteLoggedModelTag.Response()


def log_logged_model_params(
    ctx: Context, req: pb.LogLoggedModelParamsRequest
) -> pb.LogLoggedModelParamsRequest.Response:
    params = [LoggedModelParameter.from_proto(p) for p in req.params]
    ctx.store.log_logged_model_params(_own_model(ctx, req.model_id), params)
    return pb.LogLoggedModelParamsRequest.Response()


def delete_logged_model(ctx: Context, req: pb.DeleteLoggedModel) -> pb.DeleteLoggedModel.Response:
    ctx.store.delete_logged_model(_own_model(ctx, req.model_id))
    return pb.DeleteLoggedModel.Response()
