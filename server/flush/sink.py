"""The receiver's only door to MLflow: experiments, runs, batched writes, error triage."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mlflow.entities import Metric as MlflowMetric
from mlflow.entities import Param as MlflowParam
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from bridge.events import RunStart, RunStatus
from bridge.limits import LogBatchChunk
from server.flush.refusals import is_permanent
from server.flush.resume import attach, reopen
from server.flush.run_creation import (
    CreationMark,
    RunNotCreated,
    create_once,
    delete_tag_once,
    keep,
    matching,
    other_experiment_ids,
    settled,
)
from server.flush.run_tags import (
    TAG_FLUSHED,
    TAG_HEARD,
    TAG_JOB,
    TAG_ROLE,
    client_run_tags,
    owned_by,
    parent_filter,
)
from server.security.ownership import client_run_key

_logger = logging.getLogger(__name__)

RunRequest = tuple[dict[str, str], str, int | None]  # create_run's tags, run name, start ms


@dataclass(frozen=True, slots=True)
class RunRef:
    """An MLflow run as the receiver addresses it."""

    run_id: str
    experiment_id: str


class ExperimentDeleted(Exception):
    """The experiment a run belongs in is deleted in MLflow (MLflow creates no run in it)."""

    def __init__(self, name: str, experiment_id: str) -> None:
        super().__init__(f"experiment {name!r} (id {experiment_id}) is deleted")
        self.name = name
        self.experiment_id = experiment_id


class MlflowSink:
    """Creates or resumes runs by their trackbridge tags and writes chunks with log_batch."""

    def __init__(
        self, tracking_uri: str, artifact_location: str | None = None, receiver_id: str = ""
    ) -> None:
        self.tracking_uri = tracking_uri
        self._receiver_id = receiver_id
        self._client = MlflowClient(tracking_uri)
        self._artifact_location = artifact_location
        self._experiments: dict[str, str] = {}
        self._parents: dict[tuple[str, str], RunRef] = {}
        self._by_key: dict[tuple[str, str], RunRef] = {}
        """(client id, client's run key) -> its MLflow run."""
        self._nested: set[str] = set()  # runs under a client's run, not under the job's parent
        self._known_ids: set[str] = set()  # experiment ids a run start named that MLflow has
        self.unkept: set[str] = set()  # runs client_run created, waiting for keep()
        self._heard_at: dict[str, float] = {}  # run id -> when created with a heard stamp

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (for the read-only probes of server/flush/probes.py)."""
        return self._client

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created when missing."""
        cached = self._experiments.get(name)
        if cached is not None:
            return cached
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            exp_id = str(found.experiment_id)
            if found.lifecycle_stage == "deleted":
                raise ExperimentDeleted(name, exp_id)
        else:
            try:
                exp_id = self._client.create_experiment(
                    name, artifact_location=self._artifact_location
                )
            except MlflowException:
                found = self._client.get_experiment_by_name(name)  # another receiver won
                if found is None:
                    raise
                exp_id = str(found.experiment_id)
        self._experiments[name] = exp_id
        return exp_id

    def _find_run(self, experiment_id: str, filter_string: str) -> str | None:
        found = settled(matching(self._client, [experiment_id], filter_string))
        return found[0] if found else None

    def parent_run(self, job: str, experiment_id: str | None = None) -> RunRef:
        """The job's parent run in an experiment (default: the job's own), created or resumed
        by its tags. A job has one parent run in each experiment its runs go to, so that the
        MLflow UI shows every run under its job's parent."""
        exp_id = self.experiment_id(job) if experiment_id is None else experiment_id
        cached = self._parents.get((job, exp_id))
        if cached is not None:
            return cached

        def create(extra: dict[str, str]) -> tuple[str, str]:
            tags = {TAG_JOB: job, TAG_ROLE: "parent", **extra}
            return self._client.create_run(exp_id, run_name=job, tags=tags).info.run_id, exp_id

        (run_id, _), _created = create_once(
            self._client,
            [exp_id],
            parent_filter(job),
            create,
            creator=self._receiver_id,
        )
        ref = self._parents[(job, exp_id)] = RunRef(run_id, exp_id)
        return ref

    def _existing_parent(self, job: str, experiment_id: str) -> RunRef | None:
        """The job's parent run in an experiment if there is one (never creates it)."""
        cached = self._parents.get((job, experiment_id))
        if cached is not None:
            return cached
        found = self._find_run(experiment_id, parent_filter(job))
        return RunRef(found, experiment_id) if found else None

    def run_experiment_id(self, start: RunStart, job: str) -> str:
        """The experiment a run start names: its id (when that experiment exists), else its
        name, else the job's."""
        if start.experiment_id in self._known_ids:
            return start.experiment_id  # as the names in experiment_id(): looked up once
        if start.experiment_id:
            try:
                found = str(self._client.get_experiment(start.experiment_id).experiment_id)
                self._known_ids.add(found)
                return found
            except MlflowException as exc:
                if not is_permanent(exc):
                    raise
                _logger.error(
                    "experiment %s of a run start: %s; using experiment %r",
                    start.experiment_id,
                    exc.message,
                    start.experiment or job,
                )
        return self.experiment_id(start.experiment or job)

    def client_run(
        self,
        client_id: str,
        job: str,
        run_key: str,
        start: RunStart | None,
        *,
        may_create: bool = True,
        opening: bool = False,
        experiment: RunStart | None = None,
        mark: CreationMark | None = None,
        alone: bool = False,
    ) -> RunRef:
        """The MLflow run of one client run: the run it resumes (``resume_run_id``), else the
        run found again by its client's and run key's tags, else a new run. A ``start`` sets it
        RUNNING, unless it is the run's ``opening`` event (sequence 1) and the run exists
        already: then it is a late copy of the start (another receiver may have ended the run
        since). ``run_key`` may be the receiver's owned key (``<client id>/<run key>``).
        Without a start, ``experiment`` (the experiment the run's batches name, as a start that
        sets nothing else) is where the run is looked for first and created.
        A run it creates is left provisional until :meth:`keep` (once its client is told),
        unless this receiver is ``alone`` (no other can create it). With the run's ``mark``
        (its queue row), a run no create_run ever left for is created without a look first
        (server/flush/run_creation.py); without one, it is always looked for first.

        Raises:
            RunNotCreated: No run has the key and ``may_create`` is False.
            RunContended: Another receiver is creating the run right now.
        """
        run_key = client_run_key(run_key)
        found = attach(self._client, client_id, start) if start and start.resume_run_id else None
        ref = RunRef(*found) if found else None
        if ref is None:
            ref = self._keyed_run(
                client_id,
                job,
                run_key,
                start,
                may_create=may_create,
                opening=opening,
                experiment=experiment,
                mark=mark,
                alone=alone,
            )
        if start and start.parent_run_key and (client_id, start.parent_run_key) in self._by_key:
            self._nested.add(ref.run_id)  # its parent, a running client run, keeps the job's open
        elif (parent := self._existing_parent(job, ref.experiment_id)) is not None:
            self.reopen_parent(parent)
        self._by_key[(client_id, run_key)] = ref
        return ref

    def _keyed_run(
        self,
        client_id: str,
        job: str,
        run_key: str,
        start: RunStart | None,
        *,
        may_create: bool,
        opening: bool,
        experiment: RunStart | None = None,
        mark: CreationMark | None = None,
        alone: bool = False,
    ) -> RunRef:
        spec = start or experiment or RunStart()
        exp_id = self.run_experiment_id(spec, job)
        by_key = owned_by(client_id, run_key)
        where = list(dict.fromkeys((exp_id, self.experiment_id(job))))
        if start is None:
            # The start, and with it the run's experiment, went to another receiver.
            found = settled(matching(self._client, where, by_key)) or settled(
                matching(self._client, other_experiment_ids(self._client, where), by_key)
            )
            if found is not None:
                return RunRef(*found)
        if not may_create:
            raise RunNotCreated(run_key)

        def create(extra: dict[str, str]) -> tuple[str, str]:
            parent = self._parent_of(client_id, spec, exp_id, job)
            parent_id = None if parent is None else parent.run_id
            tags = client_run_tags(client_id, job, run_key, spec, parent_id) | extra
            tags[TAG_HEARD] = str(time.time_ns() // 1_000_000)  # the lease's first stamp
            if mark is not None:
                mark.attempt()  # durably, before the call leaves
            run = self._client.create_run(
                exp_id,
                start_time=spec.start_time_ms or None,
                tags=tags,
                run_name=spec.run_name or client_id,
            )
            self._heard_at[run.info.run_id] = time.monotonic()
            return run.info.run_id, exp_id

        tried = mark is None or mark.tried()
        if alone and not tried:  # nobody else could have made it: one call
            return RunRef(*create({}))
        (run_id, run_exp_id), created = create_once(
            self._client, where, by_key, create, creator=self._receiver_id, defer_keep=True,
            look_first=tried,
        )  # fmt: skip
        if created:
            self.unkept.add(run_id)
        if not created and start is not None:
            reopen(self._client, run_id, start, set_running=not opening)
        return RunRef(run_id, run_exp_id)

    def _parent_of(self, client_id: str, start: RunStart, exp_id: str, job: str) -> RunRef | None:
        """The parent of a nested run (the same client's run with that run key), else the job's
        parent run in the run's experiment; None for a top-level run."""
        key = start.parent_run_key
        if not key:
            return None if start.top_level else self.parent_run(job, exp_id)
        found = self._by_key.get((client_id, key))
        if found is not None:
            return found
        for experiment_id in dict.fromkeys((exp_id, self.experiment_id(job))):
            run_id = self._find_run(experiment_id, owned_by(client_id, key))
            if run_id is not None:
                return RunRef(run_id, experiment_id)
        _logger.warning("parent run %s of a nested run not found; nesting it under the job", key)
        return self.parent_run(job, exp_id)

    def create_runs(self, exp_id: str, runs: list[RunRequest]) -> list[str] | None:
        """Creates runs in one call where the store allows (server/flush/bulk/); else None."""
        return None

    def keep(self, run: RunRef) -> None:
        """The last step of creating a run (run_creation.py), once its client is told."""
        keep(self._client, run.run_id)
        self.unkept.discard(run.run_id)

    def heard_stamped(self, run: RunRef) -> float | None:
        """When (``time.monotonic()``) the run was created with a heard stamp, if it was."""
        return self._heard_at.pop(run.run_id, None)

    def mark_heard(self, run: RunRef, heard_ms: int) -> None:
        """Records on the run when this receiver last heard from its client."""
        self._client.set_tag(run.run_id, TAG_HEARD, str(heard_ms), synchronous=True)

    def run_state(self, run: RunRef) -> tuple[str, int]:
        """A run's MLflow status and when any receiver last heard from its client (0: never)."""
        found = self._client.get_run(run.run_id)
        heard = found.data.tags.get(TAG_HEARD, "")
        return str(found.info.status), int(heard) if heard.isdigit() else 0

    def delete_tag(self, run_id: str, key: str) -> None:
        """Deletes a tag of a run (a retry after a lost answer finds it gone: done)."""
        delete_tag_once(self._client, run_id, key)

    def resume_run(self, run: RunRef, job: str) -> None:
        """Sets a run that was ended (e.g. KILLED by its lease) RUNNING again."""
        self._client.update_run(run.run_id, status="RUNNING")
        parent = self._existing_parent(job, run.experiment_id)
        if parent is not None:
            self.reopen_parent(parent)

    def remember(self, client_id: str, run_key: str, ref: RunRef) -> None:
        """Notes a client run created in a batch, so that its nested runs find it."""
        self._by_key[(client_id, client_run_key(run_key))] = ref

    def reopen_parent(self, parent: RunRef) -> None:
        """Sets a job's parent run RUNNING again if it had ended."""
        info = self._client.get_run(parent.run_id).info
        if info.status != "RUNNING":
            self._client.update_run(parent.run_id, status="RUNNING")

    def log(self, run_id: str, chunk: LogBatchChunk, progress: str = "") -> None:
        """Writes one chunk with a single synchronous log_batch call; ``progress`` (when given)
        travels in the same call as the ``trackbridge.flushed`` tag. The chunk must leave room
        for it (``split_log_batch(reserve_tags=1)``), or MLflow's client would split the call."""
        tags = [RunTag(t.key, t.value) for t in chunk.tags]
        if progress:
            tags.append(RunTag(TAG_FLUSHED, progress))
        self._client.log_batch(
            run_id,
            metrics=[MlflowMetric(m.key, m.value, m.timestamp_ms, m.step) for m in chunk.metrics],
            params=[MlflowParam(p.key, p.value) for p in chunk.params],
            tags=tags,
            synchronous=True,
        )

    def forget(self) -> None:
        """Forgets every experiment and run id it knows (MLflow's store was replaced)."""
        self._experiments.clear()
        self._parents.clear()
        self._by_key.clear()
        self._nested.clear()
        self._known_ids.clear()

    def end_run(self, run: RunRef, job: str, status: RunStatus, end_time_ms: int) -> None:
        """Ends a client run; ends the job's parent run once none of its children runs."""
        self.terminate(run.run_id, status, end_time_ms)
        self._heard_at.pop(run.run_id, None)
        parent = self._existing_parent(job, run.experiment_id)
        if parent is None or run.run_id in self._nested:  # not one of the parent's children
            return
        if not self.children_running(parent):
            self.terminate(parent.run_id, RunStatus.FINISHED, 0)

    def children_running(self, parent: RunRef) -> bool:
        """Whether any child run of ``parent`` is RUNNING."""
        return bool(
            self._client.search_runs(
                [parent.experiment_id],
                f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.run_id}'"
                " and attributes.status = 'RUNNING'",
                max_results=1,
            )
        )

    def turns_at_once(self, workers: int) -> int:
        """How many runs' turns the flusher runs at once with ``workers`` flush writers
        (``--flush-workers``)."""
        return workers

    def terminate(self, run_id: str, status: RunStatus, end_time_ms: int) -> None:
        """MLflow's ``set_terminated`` (``end_time_ms`` 0: now)."""
        self._client.set_terminated(run_id, status.value, end_time_ms or None)
