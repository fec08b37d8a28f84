"""The zero-code store's experiments and reads: answered by the receiver (within what this
client may read, after its own writes reached MLflow), with local answers where a training
script must not fail while the receiver is away (its own runs, experiments it named)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from mlflow.entities import Experiment, ExperimentTag, Run, ViewType
from mlflow.entities.lifecycle_stage import LifecycleStage
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos import service_pb2 as pb
from mlflow.store.entities.paged_list import PagedList

from client_sdk._compat import checks
from client_sdk._compat.addressing import DEFAULT_EXPERIMENT_ID, SCHEME, local_experiment_id
from client_sdk._compat.session import RunRecord, Session
from client_sdk.plugin._calls import Unreachable, call, experiment_of, run_of

_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
_LOCAL_READS_S = 30.0


class Reads:
    """Experiments, runs, metric histories (a mixin of TrackbridgeStore)."""

    _session: Session
    _experiments: dict[str, str]
    """Experiment id -> name, for the ids this store handed out or learned."""
    _mlflow_ids: set[str]
    """The ids among them that are MLflow's (the rest are local stand-ins)."""
    _local_reads_until = 0.0
    """Until then (monotonic), reads of this process's own runs are answered locally."""

    # -- experiments -----------------------------------------------------------------------------

    def _local_experiment(self, experiment_id: str, name: str) -> Experiment:
        location = f"{SCHEME}{self._session.config.receiver}/experiments/{experiment_id}"
        return Experiment(experiment_id, name, location, LifecycleStage.ACTIVE, [])

    def _learn(self, experiment: Experiment) -> Experiment:
        self._experiments[str(experiment.experiment_id)] = experiment.name
        self._mlflow_ids.add(str(experiment.experiment_id))
        return experiment

    def _by_name(self, name: str) -> Experiment | None:
        try:
            reply = call(
                self._session,
                pb.GetExperimentByName(experiment_name=name),
                pb.GetExperimentByName.Response,
            )
        except RestException as exc:
            if exc.error_code == _NOT_FOUND:
                return None
            raise
        return self._learn(experiment_of(self._session, reply.experiment))

    def _mlflow_experiment_id(self, experiment_id: str) -> str:
        """MLflow's id for an id this store handed out ("0" is the job's experiment)."""
        key = str(experiment_id)
        if key in self._mlflow_ids and key != DEFAULT_EXPERIMENT_ID:
            return key
        name = (
            self._session.config.job if key == DEFAULT_EXPERIMENT_ID else self._experiments.get(key)
        )
        if name is None:
            return key
        found = self._by_name(name)
        return str(found.experiment_id) if found is not None else key

    def get_experiment_by_name(self, experiment_name: str) -> Experiment | None:
        checks.experiment_name(experiment_name, "experiment_name")  # as MLflow's server would
        try:
            return self._by_name(experiment_name)
        except Unreachable:
            # Keep a script going while the receiver is away: the run start carries the name.
            exp_id = local_experiment_id(experiment_name)
            self._experiments[exp_id] = experiment_name
            return self._local_experiment(exp_id, experiment_name)

    def create_experiment(
        self,
        name: str,
        artifact_location: str | None = None,
        tags: Sequence[ExperimentTag] | None = None,
    ) -> str:
        checks.experiment_name(name, "name")  # at the call, even while the receiver is away
        request = pb.CreateExperiment(name=name, tags=[t.to_proto() for t in tags or ()])
        try:
            reply = call(self._session, request, pb.CreateExperiment.Response)
        except Unreachable:
            exp_id = local_experiment_id(name)
            self._experiments[exp_id] = name
            return exp_id
        self._experiments[reply.experiment_id] = name
        self._mlflow_ids.add(reply.experiment_id)
        return reply.experiment_id

    def get_experiment(self, experiment_id: str) -> Experiment:
        key = str(experiment_id)
        try:
            if key == DEFAULT_EXPERIMENT_ID or (
                key not in self._mlflow_ids and key in self._experiments
            ):
                name = (
                    self._session.config.job
                    if key == DEFAULT_EXPERIMENT_ID
                    else self._experiments[key]
                )
                found = self._by_name(name)
                if found is None:
                    return self._local_experiment(key, name)
                self._experiments[key] = name
                return found
            reply = call(
                self._session, pb.GetExperiment(experiment_id=key), pb.GetExperiment.Response
            )
        except Unreachable:
            if key in self._experiments or key == DEFAULT_EXPERIMENT_ID:
                return self._local_experiment(
                    key, self._experiments.get(key) or self._session.config.job
                )
            raise
        return self._learn(experiment_of(self._session, reply.experiment))

    def search_experiments(
        self,
        view_type: int = ViewType.ACTIVE_ONLY,
        max_results: int = 1000,
        filter_string: str | None = None,
        order_by: list[str] | None = None,
        page_token: str | None = None,
    ) -> PagedList[Experiment]:
        request = pb.SearchExperiments(
            view_type=view_type,  # type: ignore[arg-type]
            max_results=max_results,
            filter=filter_string,
            order_by=order_by,
            page_token=page_token,
        )
        reply = call(self._session, request, pb.SearchExperiments.Response)
        found = [self._learn(experiment_of(self._session, e)) for e in reply.experiments]
        return PagedList(
            found, reply.next_page_token if reply.HasField("next_page_token") else None
        )

    def set_experiment_tag(self, experiment_id: str, tag: ExperimentTag) -> None:
        request = pb.SetExperimentTag(
            experiment_id=self._mlflow_experiment_id(experiment_id), key=tag.key, value=tag.value
        )
        call(self._session, request, pb.SetExperimentTag.Response)

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        request = pb.DeleteExperimentTag(
            experiment_id=self._mlflow_experiment_id(experiment_id), key=key
        )
        call(self._session, request, pb.DeleteExperimentTag.Response)

    # -- runs ----------------------------------------------------------------------------------

    _local_run: Callable[[RunRecord], Run]
    """Provided by TrackbridgeStore."""

    def get_run(self, run_id: str) -> Run:
        session = self._session
        record = session.find(run_id)
        mlflow_id = session.run_id(record) if record is not None else run_id
        if record is not None and mlflow_id == record.key:
            return self._local_run(record)  # MLflow has no id for it yet
        if record is not None and time.monotonic() < self._local_reads_until:
            return self._local_run(record)  # the receiver was away a moment ago
        try:
            timeout = session.run_id_timeout_s if record is not None else None
            reply = call(session, pb.GetRun(run_id=mlflow_id), pb.GetRun.Response, timeout)
        except Unreachable:
            if record is None:
                raise
            # Its own run: training goes on without the receiver (MLflow's fluent calls read
            # the run often: log_metric(run_id=...), the system-metrics monitor), answered
            # from what this process logged, without asking again for a while.
            self._local_reads_until = time.monotonic() + _LOCAL_READS_S
            return self._local_run(record)
        return run_of(session, reply.run)

    def _search_runs(  # noqa: PLR0917 - MLflow's signature
        self,
        experiment_ids: Sequence[str],
        filter_string: str,
        run_view_type: int,
        max_results: int,
        order_by: Sequence[str] | None,
        page_token: str | None,
    ) -> tuple[list[Run], str | None]:
        request = pb.SearchRuns(
            experiment_ids=[self._mlflow_experiment_id(e) for e in experiment_ids],
            filter=filter_string,
            run_view_type=ViewType.to_proto(run_view_type),  # type: ignore[arg-type]
            max_results=max_results,
            order_by=order_by,
            page_token=page_token,
        )
        reply = call(self._session, request, pb.SearchRuns.Response)
        runs = [run_of(self._session, r) for r in reply.runs]
        return runs, reply.next_page_token or None

    def get_metric_history(
        self,
        run_id: str,
        metric_key: str,
        max_results: int | None = None,
        page_token: str | None = None,
    ) -> PagedList[Any]:
        from mlflow.entities import Metric

        record = self._session.find(run_id)
        mlflow_id = self._session.run_id(record) if record is not None else run_id
        request = pb.GetMetricHistory(
            run_id=mlflow_id, metric_key=metric_key, max_results=max_results, page_token=page_token
        )
        try:
            reply = call(self._session, request, pb.GetMetricHistory.Response)
        except MlflowException:
            raise
        metrics = [Metric.from_proto(m) for m in reply.metrics]
        return PagedList(metrics, reply.next_page_token or None)
