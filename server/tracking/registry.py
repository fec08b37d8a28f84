"""Model-registry calls (``log_model(registered_model_name=...)``, ``MlflowClient``'s registry
methods), answered by the receiver's registry store.

The registry is one namespace shared by every job, so clients may read it, create registered
models and versions (of their own logged models or runs), and set tags and aliases; renaming,
deleting and stage transitions change what others rely on and are left to MLflow's own
clients. Version sources and download URIs never name the artifact store: a version points to
``models:/<model id>`` (or has no location) as clients see it.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from mlflow.entities.model_registry import ModelVersionTag, RegisteredModelTag
from mlflow.exceptions import MlflowException
from mlflow.protos import model_registry_pb2 as pb
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.store.artifact.utils.models import _parse_model_uri

from server.tracking.reads import Context, check_visible, visible_model

_MODEL_LOCATION = re.compile(r"/models/(m-[0-9a-f]{32})/artifacts/?$")
"""A logged model's artifact location ends ``.../models/<model id>/artifacts`` in every store."""


def _version(version: Any) -> pb.ModelVersion:
    proto: pb.ModelVersion = version.to_proto()
    # MLflow's SQL registry keeps no model id on a version (an MLflow server does): without
    # one the version would point nowhere and a models:/<name>/<version> load would download
    # the client's working directory.
    found = _MODEL_LOCATION.search(proto.source)
    model_id = getattr(version, "model_id", None) or (found.group(1) if found else None)
    if not proto.source.startswith(("models:/", "runs:/")):
        proto.source = f"models:/{model_id}" if model_id else ""
    return proto


def _versions(versions: Any) -> list[pb.ModelVersion]:
    return [_version(v) for v in versions]


def create_registered_model(
    ctx: Context, req: pb.CreateRegisteredModel
) -> pb.CreateRegisteredModel.Response:
    _writer(ctx)
    model = ctx.registry().create_registered_model(
        req.name,
        tags=[
            RegisteredModelTag(t.key, t.value)  # type: ignore[no-untyped-call]
            for t in req.tags
        ]
        or None,
        description=req.description or None,
    )
    return pb.CreateRegisteredModel.Response(registered_model=model.to_proto())


def get_registered_model(
    ctx: Context, req: pb.GetRegisteredModel
) -> pb.GetRegisteredModel.Response:
    model = ctx.registry().get_registered_model(req.name)
    return pb.GetRegisteredModel.Response(registered_model=model.to_proto())


def search_registered_models(
    ctx: Context, req: pb.SearchRegisteredModels
) -> pb.SearchRegisteredModels.Response:
    found = ctx.registry().search_registered_models(
        filter_string=req.filter or None,
        max_results=req.max_results,
        order_by=list(req.order_by) or None,
        page_token=req.page_token or None,
    )
    response = pb.SearchRegisteredModels.Response()
    response.registered_models.extend(m.to_proto() for m in found)
    if found.token:
        response.next_page_token = found.token
    return response


def get_latest_versions(ctx: Context, req: pb.GetLatestVersions) -> pb.GetLatestVersions.Response:
    found = ctx.registry().get_latest_versions(req.name, list(req.stages) or None)
    return pb.GetLatestVersions.Response(model_versions=_versions(found))


def create_model_version(
    ctx: Context, req: pb.CreateModelVersion
) -> pb.CreateModelVersion.Response:
    _writer(ctx)
    source, run_id, model_id = req.source, req.run_id or None, req.model_id or None
    if source.startswith("models:/"):
        parsed = _parse_model_uri(source)
        model_id = parsed.model_id or model_id
    registry_store = ctx.registry()
    if model_id:
        model = visible_model(ctx, model_id)
        run_id = run_id or model.source_run_id
        if _is_sql_registry(registry_store):
            # MLflow's SQL registry resolves models:/ sources with the process's default
            # tracking URI, not this receiver's store: resolve it here. (An MLflow server
            # resolves them with its own store.)
            source = model.artifact_location
    elif source.startswith("runs:/"):
        named, _, path = source[len("runs:/") :].partition("/")
        run_id = ctx.run_id_of_key(named) or named or run_id or ""  # a run going by its key
        source = f"runs:/{run_id}/{path}" if named else source
    else:
        raise MlflowException(
            "a model version's source must be models:/<model id> or runs:/<run id>/<path> (the"
            " artifact store is the receiver's)",
            error_code=PERMISSION_DENIED,
        )
    if run_id:
        check_visible(ctx, run_id)
    version = registry_store.create_model_version(
        req.name,
        source,
        run_id=run_id,
        tags=[
            ModelVersionTag(t.key, t.value)  # type: ignore[no-untyped-call]
            for t in req.tags
        ]
        or None,
        run_link=req.run_link or None,
        description=req.description or None,
        model_id=model_id,
    )
    return pb.CreateModelVersion.Response(model_version=_version(version))


def get_model_version(ctx: Context, req: pb.GetModelVersion) -> pb.GetModelVersion.Response:
    version = ctx.registry().get_model_version(req.name, req.version)
    return pb.GetModelVersion.Response(model_version=_version(version))


def search_model_versions(
    ctx: Context, req: pb.SearchModelVersions
) -> pb.SearchModelVersions.Response:
    found = ctx.registry().search_model_versions(
        filter_string=req.filter or None,
        max_results=req.max_results,
        order_by=list(req.order_by) or None,
        page_token=req.page_token or None,
    )
    response = pb.SearchModelVersions.Response(model_versions=_versions(found))
    if found.token:
        response.next_page_token = found.token
    return response


def get_model_version_download_uri(
    ctx: Context, req: pb.GetModelVersionDownloadUri
) -> pb.GetModelVersionDownloadUri.Response:
    version = ctx.registry().get_model_version(req.name, req.version)
    return pb.GetModelVersionDownloadUri.Response(artifact_uri=_version(version).source)


def get_model_version_by_alias(
    ctx: Context, req: pb.GetModelVersionByAlias
) -> pb.GetModelVersionByAlias.Response:
    version = ctx.registry().get_model_version_by_alias(req.name, req.alias)
    return pb.GetModelVersionByAlias.Response(model_version=_version(version))


def set_registered_model_tag(
    ctx: Context, req: pb.SetRegisteredModelTag
) -> pb.SetRegisteredModelTag.Response:
    _writer(ctx)
    ctx.registry().set_registered_model_tag(req.name, RegisteredModelTag(req.key, req.value))  # type: ignore[no-untyped-call]
    return pb.SetRegisteredModelTag.Response()


def set_model_version_tag(
    ctx: Context, req: pb.SetModelVersionTag
) -> pb.SetModelVersionTag.Response:
    _writer(ctx)
    tag = ModelVersionTag(req.key, req.value)  # type: ignore[no-untyped-call]
    ctx.registry().set_model_version_tag(req.name, req.version, tag)
    return pb.SetModelVersionTag.Response()


def set_registered_model_alias(
    ctx: Context, req: pb.SetRegisteredModelAlias
) -> pb.SetRegisteredModelAlias.Response:
    _writer(ctx)
    ctx.registry().set_registered_model_alias(req.name, req.alias, req.version)
    return pb.SetRegisteredModelAlias.Response()


def _writer(ctx: Context) -> None:
    if ctx.caller.viewer:
        raise ctx.caller.refuse_write("The model registry")


def _is_sql_registry(store: object) -> bool:
    """Whether ``store`` is MLflow's SQL model registry. Its module is not imported here: it
    costs a receiver on an MLflow server (which never has one) a second and a half at start."""
    sql = sys.modules.get("mlflow.store.model_registry.sqlalchemy_store")
    return sql is not None and isinstance(store, sql.SqlAlchemyStore)
