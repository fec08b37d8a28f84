"""One process's link to a receiver for the MLflow-compatible layers (``client_sdk.mlflow``, the
tracking-URI plugin, the NVFlare writer): a Writer for events, an ArtifactSender for files,
this process's rank, and what it knows of the runs it started.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path

from bridge import envvars
from bridge.convert import check_run_start
from bridge.events import DeleteTag, Event, MlflowCall, Param, RunEnd, RunStart, RunStatus, Tag
from client_sdk._artifacts import ArtifactSender
from client_sdk._compat.records import RunRecord, now_ms
from client_sdk._compat.relay import Relay
from client_sdk._ranks import RankInfo, detect_rank, logs_on_rank_zero_only
from client_sdk._transport import ArtifactTransport, TransportError
from client_sdk.config import WriterConfig
from client_sdk.writer import RunHandle, Writer

_logger = logging.getLogger(__name__)

__all__ = ["RunRecord", "Session", "now_ms"]

DEFAULT_RUN_ID_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 60.0
_FLUSH_BEFORE_READ_S = 10.0


class _MutedWriter(Writer):
    """A rank that does not log (rank-zero-only mode): calls are checked, nothing is sent."""

    def _enqueue(self, run_key: str, event: Event) -> None:
        return


class Session:
    """A Writer, an ArtifactSender and the runs of this process, for one receiver.

    Args:
        receiver: ``host:port`` (else ``TRACKBRIDGE_RECEIVER``).
        client_id: Else ``TRACKBRIDGE_CLIENT_ID``, else the host name; ranks add ``-rank<N>``.
        job: Else ``TRACKBRIDGE_JOB``, else ``"default"``.
        rank_zero_only: Only rank 0 of a distributed job logs (else
            ``TRACKBRIDGE_RANK_ZERO_ONLY``).
        env: The environment to read.
    """

    def __init__(
        self,
        receiver: str | None = None,
        *,
        client_id: str | None = None,
        job: str | None = None,
        rank_zero_only: bool | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> None:
        base = WriterConfig.resolve(receiver, client_id, job, env=env)
        self.rank: RankInfo = detect_rank(env)
        # System metrics are sampled per run by the fluent API (client_sdk/mlflow/_system.py).
        self.config = dataclasses.replace(
            base, client_id=self.rank.client_id(base.client_id), system_metrics=False
        )
        self.muted = self.rank.rank != 0 and logs_on_rank_zero_only(rank_zero_only, env)
        self.writer: Writer = (_MutedWriter if self.muted else Writer)(config=self.config)
        raw_timeout = env.get(envvars.TRACKBRIDGE_RUN_ID_TIMEOUT_S)
        self.run_id_timeout_s = (
            float(raw_timeout) if raw_timeout is not None else DEFAULT_RUN_ID_TIMEOUT_S
        )
        raw_read = env.get(envvars.TRACKBRIDGE_READ_TIMEOUT_S)
        self.read_timeout_s = float(raw_read) if raw_read is not None else DEFAULT_READ_TIMEOUT_S
        self.models: set[str] = set()
        """Logged models this process sent files of (their files ride under the model id)."""
        self._relay: Relay | None = None
        self.exit_hooks: list[Callable[[], None]] = []
        """Run first at interpreter exit (the fluent API ends its active runs there)."""
        self._artifacts: ArtifactSender | None = None
        self._lock = threading.RLock()
        self._runs: dict[str, RunRecord] = {}
        self._by_id: dict[str, RunRecord] = {}
        self._unreachable = False
        self._mlflow_url: str | None = None
        self._closed = False
        self.forked = False
        """True in a forked child (a DataLoader worker): the parent's runs are not its own."""
        _live.add(self)
        atexit.register(self._close_at_exit)

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        run_name: str,
        *,
        experiment: str = "",
        tags: Mapping[str, str] | None = None,
        description: str = "",
        parent: RunRecord | None = None,
        resume_run_id: str = "",
        experiment_id: str = "",
        top_level: bool = False,
    ) -> RunRecord:
        """Starts a run (or resumes an MLflow run by id); its tags are validated already.

        Raises:
            MlflowException: The run start is larger than one event may be.
        """
        check_run_start(RunStart(experiment, run_name, dict(tags or {}), description))
        handle = RunHandle(uuid.uuid4().hex, run_name, self.writer)
        record = RunRecord(handle, run_name, experiment, now_ms(), parent, resumed_id=resume_run_id)
        record.experiment_id = experiment_id
        record.top_level = top_level
        record.tags.update(tags or {})
        with self._lock:
            self._runs[record.key] = record
            if resume_run_id:
                self._by_id[resume_run_id] = record
        self._send_start(record, tags or {}, description)
        return record

    def reopen(
        self, record: RunRecord, run_name: str, tags: Mapping[str, str], description: str
    ) -> None:
        """Sets an ended run of this process RUNNING again (``start_run(run_id=...)``)."""
        check_run_start(RunStart(record.experiment, run_name, dict(tags), description))
        record.status = RunStatus.RUNNING.value
        record.end_time_ms = None
        record.handle.ended = False
        if run_name:
            record.run_name = record.handle.run_name = run_name
        record.tags.update(tags)
        self._send_start(record, tags, description)

    def _send_start(self, record: RunRecord, tags: Mapping[str, str], description: str) -> None:
        self.writer.enqueue(
            record.handle,
            RunStart(
                experiment=record.experiment,
                run_name=record.run_name,
                tags={**tags, **self.rank.run_tags()},
                description=description,
                start_time_ms=record.start_time_ms,
                parent_run_key=record.parent.key if record.parent is not None else "",
                resume_run_id=record.resumed_id,
                experiment_id=record.experiment_id,
                top_level=record.top_level,
            ),
        )

    def end_run(self, record: RunRecord, status: str) -> None:
        """Ends a run with a status MLflow knows."""
        record.status = status
        record.end_time_ms = now_ms()
        record.handle.ended = True
        self.writer.enqueue(record.handle, RunEnd(RunStatus(status), record.end_time_ms))

    def find(self, run_id: str) -> RunRecord | None:
        """The run this process knows by that id (its MLflow id or its run key), if any."""
        with self._lock:
            record = self._runs.get(run_id) or self._by_id.get(run_id)
            if record is not None:
                return record
            for candidate in self._runs.values():
                if candidate.handle.run_id == run_id:
                    self._by_id[run_id] = candidate
                    return candidate
        return None

    def run_id(self, record: RunRecord, *, wait: bool = True) -> str:
        """The run's MLflow id; waits (bounded) for the receiver to report it, else the key.

        After a wait runs out (receiver or MLflow unreachable), later reads wait a moment only
        (0.2 s) until an id arrives again, so nothing stalls on run ids.
        """
        if record.resumed_id:
            return record.resumed_id
        run_id = record.handle.run_id
        if run_id or self.muted or not wait:
            return run_id or record.key
        timeout = 0.2 if self._unreachable or record.gave_up else self.run_id_timeout_s
        run_id = self.writer.run_id(record.handle, timeout)
        if run_id:
            self._unreachable = False
            with self._lock:
                self._by_id[run_id] = record
            return run_id
        record.gave_up = True
        if not self._unreachable:
            _logger.warning(
                "trackbridge: no MLflow run id from the receiver at %s within %.1f s; run %s"
                " goes by its key until then (both are accepted wherever a run id is)",
                self.config.receiver,
                timeout,
                record.key,
            )
        self._unreachable = True
        return record.key

    def experiment_id(self, record: RunRecord) -> str:
        """The run's MLflow experiment id, "" until the receiver has reported it."""
        return record.handle.experiment_id

    # -- entries (validated by the caller) ----------------------------------------------------

    def log_params(self, record: RunRecord, params: list[tuple[str, str]]) -> None:
        """Logs params the caller has checked (including against ``record.params``)."""
        for key, value in params:
            record.params[key] = value
            self.writer.enqueue(record.handle, Param(key, value))

    def set_tags(self, record: RunRecord, tags: list[tuple[str, str]]) -> None:
        """Sets tags the caller has checked."""
        for key, value in tags:
            record.tags[key] = value
            self.writer.enqueue(record.handle, Tag(key, value))

    def delete_tag(self, record: RunRecord, key: str) -> None:
        """Deletes a tag."""
        record.tags.pop(key, None)
        self.writer.enqueue(record.handle, DeleteTag(key))

    def journal(self, record: RunRecord, method: str, request: bytes) -> None:
        """Sends an MLflow write (``bridge.protocol.JOURNALED_CALLS``) in the run's event stream,
        to be applied in order with its other events."""
        self.writer.enqueue(record.handle, MlflowCall(method, request))

    def runs(self) -> list[RunRecord]:
        """The runs this process started or resumed."""
        with self._lock:
            return list(self._runs.values())

    # -- reads and id-creating writes, answered by the receiver ---------------------------------

    @property
    def relay(self) -> Relay:
        """The channel to the receiver's Tracking service (made at first use)."""
        with self._lock:
            if self._relay is None:
                self._relay = Relay(self.config)
            return self._relay

    def fresh_keys(self, timeout_s: float = _FLUSH_BEFORE_READ_S) -> list[str]:
        """Flushes what this process logged (bounded) and names the runs and models the
        receiver must have written to MLflow before it answers a read (read-your-writes)."""
        self.flush(timeout_s)
        with self._lock:
            return [*self._runs, *self.models]

    def call(self, method: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        """One MLflow call through the receiver, after this process's writes; raises
        ``RelayError``."""
        budget = self.read_timeout_s if timeout_s is None else timeout_s
        fresh = self.fresh_keys(min(budget, _FLUSH_BEFORE_READ_S))
        return self.relay.call(method, payload, fresh, budget)

    def download(self, dest: Path, *, path: str, run_id: str = "", model_id: str = "") -> None:
        """One artifact file through the receiver, after this process's writes."""
        fresh = self.fresh_keys()
        self.relay.download(
            dest,
            path=path,
            run_id=run_id,
            model_id=model_id,
            fresh=fresh,
            timeout_s=self.read_timeout_s,
        )

    # -- artifacts ----------------------------------------------------------------------------

    @property
    def artifacts(self) -> ArtifactSender:
        """The artifact sender (created at the first artifact)."""
        with self._lock:
            if self._artifacts is None:
                self._artifacts = self.writer.artifacts  # staged in the writer's spool
            return self._artifacts

    def log_file(self, record: RunRecord, local_path: str, artifact_path: str) -> None:
        """Copies a file aside now and sends it to ``artifact_path`` (a directory)."""
        name = os.path.basename(local_path)
        if not self.muted:
            self.artifacts.stage_copy(record.key, local_path, artifact_path)
        record.artifacts[_join(artifact_path, name)] = os.path.getsize(local_path)

    def log_model_file(
        self, model_id: str, local_path: str, artifact_path: str, *, run_key: str = ""
    ) -> None:
        """Copies a file of a logged model aside now and sends it into the model's artifacts."""
        self.models.add(model_id)
        if not self.muted:
            self.artifacts.stage_copy(
                run_key or model_id, local_path, artifact_path, model_id=model_id
            )

    def log_staged(self, record: RunRecord, staged: Path, artifact_path: str, name: str) -> None:
        """Sends a file written into ``artifacts.new_path()`` by the caller."""
        record.artifacts[_join(artifact_path, name)] = staged.stat().st_size
        if self.muted:
            shutil.rmtree(staged.parent, ignore_errors=True)
            return
        self.artifacts.stage_file(record.key, staged, artifact_path, name)

    # -- reads the bridge cannot serve ----------------------------------------------------------

    def mlflow_url(self) -> str:
        """The MLflow address the receiver writes to ("" if it has no UI address or is down)."""
        if self._mlflow_url is None:
            transport = ArtifactTransport(self.config.receiver, self.config.security)
            try:
                self._mlflow_url = transport.info(timeout_s=2.0).mlflow_url
            except TransportError:
                return ""
            finally:
                transport.close()
        return self._mlflow_url

    def read_error(self, what: str) -> str:
        """The message for a read call the bridge cannot serve, naming where to read instead."""
        url = self.mlflow_url()
        where = (
            f"the MLflow server at {url} (its UI, or MlflowClient({url!r}))"
            if url
            else "the MLflow store the receiver writes to (its UI: `mlflow ui` against it)"
        )
        return (
            f"{what} reads from MLflow, and trackbridge clients only log: the receiver at"
            f" {self.config.receiver} holds MLflow's credentials. Read from {where}."
        )

    # -- delivery -------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Waits until everything logged so far is acknowledged by the receiver."""
        deadline = time.monotonic() + timeout_s
        done = self.writer.flush(timeout_s)
        if self._artifacts is not None:
            done = self._artifacts.flush(max(0.0, deadline - time.monotonic())) and done
        return done

    def close(self, timeout_s: float | None = None) -> int:
        """Delivers within ``timeout_s``, then stops; returns events and files not delivered."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        atexit.unregister(self._close_at_exit)
        budget = self.config.close_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        # Events first (small, and the run's end is among them), then files.
        left = int(self.writer.close(budget))
        if self._artifacts is not None:
            left += self._artifacts.close(max(0.5, deadline - time.monotonic()))
        if self._relay is not None:
            self._relay.close()
        return left

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's runs (their sequence numbers are the
        parent's); the Writer and ArtifactSender reset themselves."""
        self._lock = threading.RLock()
        self._runs.clear()
        self._by_id.clear()
        self.forked = True

    def _close_at_exit(self) -> None:
        for hook in self.exit_hooks:
            try:
                hook()
            except Exception:
                _logger.exception("trackbridge: exit hook failed")
        self.close()


_live: weakref.WeakSet[Session] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for session in list(_live):
        session.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name
