"""The zero-code store's logged models, run inputs and outputs, and run deletion.

Creating a logged model waits for MLflow (bounded): its id is written into the model's
``MLmodel`` file at once. Every later write about a model logged in one of this process's runs
(finalize, tags, params), like the run's inputs and outputs and ``delete_run``, travels in
that run's event stream (``MlflowCall`` events): durable, in order with the run's metrics, and
never waiting. Writes about anything else go to the receiver at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import Message
from mlflow.entities import LoggedModelStatus
from mlflow.entities.logged_model import LoggedModel
from mlflow.protos import service_pb2 as pb
from mlflow.store.entities.paged_list import PagedList

from client_sdk._compat.session import RunRecord, Session
from client_sdk.plugin._calls import Unreachable, call, model_of, not_carried


class Models:
    """Logged models, inputs, outputs, run deletion (a mixin of TrackbridgeStore)."""

    _session: Session
    _models: dict[str, tuple[RunRecord | None, LoggedModel]]
    """Logged models this store created: the run that logged each, and its latest state."""

    _mlflow_experiment_id: Callable[[str], str]
    """Provided by Reads."""
    _record: Callable[[str], RunRecord]
    """Provided by TrackbridgeStore."""

    def _write(self, record: RunRecord | None, request: Message, response: type[Message]) -> None:
        """A write in the run's event stream when the run is this process's, else at once."""
        if record is not None:
            self._session.journal(record, request.DESCRIPTOR.full_name, request.SerializeToString())
            return
        call(self._session, request, response)

    def _mlflow_run_id(self, run_id: str | None) -> str:
        if not run_id:
            return ""
        record = self._session.find(run_id)
        return self._session.run_id(record) if record is not None else run_id

    # -- runs ------------------------------------------------------------------------------

    def delete_run(self, run_id: str) -> None:
        record = self._session.find(run_id)
        self._write(record, pb.DeleteRun(run_id=self._mlflow_run_id(run_id)), pb.DeleteRun.Response)

    def restore_run(self, run_id: str) -> None:
        record = self._session.find(run_id)
        self._write(
            record, pb.RestoreRun(run_id=self._mlflow_run_id(run_id)), pb.RestoreRun.Response
        )

    def log_inputs(
        self,
        run_id: str,
        datasets: Sequence[Any] | None = None,
        models: Sequence[Any] | None = None,
    ) -> None:
        record = self._record(run_id)
        request = pb.LogInputs(
            run_id=self._mlflow_run_id(run_id),
            datasets=[d.to_proto() for d in datasets or ()],
            models=[m.to_proto() for m in models or ()],
        )
        self._write(record, request, pb.LogInputs.Response)

    def log_outputs(self, run_id: str, models: Sequence[Any]) -> None:
        record = self._record(run_id)
        request = pb.LogOutputs(
            run_id=self._mlflow_run_id(run_id), models=[m.to_proto() for m in models]
        )
        self._write(record, request, pb.LogOutputs.Response)

    def record_logged_model(self, run_id: str, mlflow_model: Any) -> None:
        raise not_carried(
            "record_logged_model",
            "MLflow 2's way to log a model (the spark flavor); trackbridge logs models as MLflow 3"
            " logged models (log_model of every other flavor)",
        )

    # -- logged models ---------------------------------------------------------------------

    def create_logged_model(  # noqa: PLR0917 - MLflow's signature
        self,
        experiment_id: str,
        name: str | None = None,
        source_run_id: str | None = None,
        tags: Sequence[Any] | None = None,
        params: Sequence[Any] | None = None,
        model_type: str | None = None,
    ) -> LoggedModel:
        record = self._session.find(source_run_id) if source_run_id else None
        request = pb.CreateLoggedModel(
            experiment_id=self._mlflow_experiment_id(experiment_id),
            name=name,
            source_run_id=self._mlflow_run_id(source_run_id) or None,
            tags=[pb.LoggedModelTag(key=t.key, value=t.value) for t in tags or ()],
            params=[p.to_proto() for p in params or ()],
            model_type=model_type,
        )
        reply = call(self._session, request, pb.CreateLoggedModel.Response)
        model = model_of(self._session, reply.model)
        self._models[model.model_id] = (record, model)
        return model

    def _known(self, model_id: str) -> tuple[RunRecord | None, LoggedModel | None]:
        return self._models.get(model_id, (None, None))

    def get_logged_model(self, model_id: str, allow_deleted: bool = False) -> LoggedModel:
        try:
            reply = call(
                self._session, pb.GetLoggedModel(model_id=model_id), pb.GetLoggedModel.Response
            )
        except Unreachable:
            _, known = self._known(model_id)
            if known is None:
                raise
            return known
        return model_of(self._session, reply.model)

    def search_logged_models(  # noqa: PLR0917 - MLflow's signature
        self,
        experiment_ids: list[str],
        filter_string: str | None = None,
        datasets: list[dict[str, Any]] | None = None,
        max_results: int | None = None,
        order_by: list[dict[str, Any]] | None = None,
        page_token: str | None = None,
    ) -> PagedList[LoggedModel]:
        request = pb.SearchLoggedModels(
            experiment_ids=[self._mlflow_experiment_id(e) for e in experiment_ids],
            filter=filter_string,
            datasets=[pb.SearchLoggedModels.Dataset(**d) for d in datasets or ()],
            max_results=max_results,
            order_by=[pb.SearchLoggedModels.OrderBy(**o) for o in order_by or ()],
            page_token=page_token,
        )
        reply = call(self._session, request, pb.SearchLoggedModels.Response)
        models = [model_of(self._session, m) for m in reply.models]
        return PagedList(models, reply.next_page_token or None)

    def finalize_logged_model(self, model_id: str, status: LoggedModelStatus) -> LoggedModel:
        record, known = self._known(model_id)
        request = pb.FinalizeLoggedModel(model_id=model_id, status=status.to_int())  # type: ignore[arg-type]
        if record is None or known is None:
            reply = call(self._session, request, pb.FinalizeLoggedModel.Response)
            return model_of(self._session, reply.model)
        self._write(record, request, pb.FinalizeLoggedModel.Response)
        known.status = status
        return known

    def set_logged_model_tags(self, model_id: str, tags: Sequence[Any]) -> None:
        record, known = self._known(model_id)
        request = pb.SetLoggedModelTags(
            model_id=model_id, tags=[pb.LoggedModelTag(key=t.key, value=t.value) for t in tags]
        )
        self._write(record, request, pb.SetLoggedModelTags.Response)
        if known is not None:
            known.tags.update({t.key: t.value for t in tags})

    def delete_logged_model_tag(self, model_id: str, key: str) -> None:
        record, known = self._known(model_id)
        request = pb.DeleteLoggedModelTag(model_id=model_id, tag_key=key)
        self._write(record, request, pb.DeleteLoggedModelTag.Response)
        if known is not None:
            known.tags.pop(key, None)

    def log_logged_model_params(self, model_id: str, params: Sequence[Any]) -> None:
        record, known = self._known(model_id)
        request = pb.LogLoggedModelParamsRequest(
            model_id=model_id, params=[p.to_proto() for p in params]
        )
        self._write(record, request, pb.LogLoggedModelParamsRequest.Response)
        if known is not None:
            known.params.update({p.key: p.value for p in params})

    def delete_logged_model(self, model_id: str) -> None:
        record, _ = self._known(model_id)
        self._write(record, pb.DeleteLoggedModel(model_id=model_id), pb.DeleteLoggedModel.Response)
