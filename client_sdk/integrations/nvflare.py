"""NVFlare migration: ``MLflowWriter`` with NVFlare's method names and semantics.

NVFlare learners log through ``nvflare.app_opt.tracking.mlflow.mlflow_writer.MLflowWriter``,
whose calls become events that the server's MLflowReceiver writes into one MLflow run per site.
This class keeps those calls -- ``log_param``, ``log_params``, ``log_metric``, ``log_metrics``
(with ``step``), ``log_text``, ``set_tag``, ``set_tags`` -- so a learner switches by changing
the import; each site (client id) gets its own run under the job's parent run, as in NVFlare.
Calls append to memory and return; bad input raises MLflow's error at the call.
"""

from __future__ import annotations

import posixpath
import shutil
from collections.abc import Mapping
from typing import Any

from bridge.events import Metric
from bridge.validation import verify_artifact_path
from client_sdk._compat.checks import checked_params, checked_tags, metric_point
from client_sdk._compat.session import RunRecord, Session, now_ms


class MLflowWriter:
    """Logs one site's metrics, params, tags and texts to its run, through the receiver.

    Args:
        receiver: Receiver ``host:port`` (else ``TRACKBRIDGE_RECEIVER``).
        client_id: The site name (else ``TRACKBRIDGE_CLIENT_ID``, else the host name).
        job: The job (else ``TRACKBRIDGE_JOB``): MLflow experiment of the parent run.
        run_name: The site's run name (default: the client id, as NVFlare names site runs).
        experiment_name: The experiment of the site's run (default: the job's).
        tags: Tags of the site's run.
        session: Share an existing session instead (the other arguments are then ignored).
    """

    def __init__(
        self,
        receiver: str | None = None,
        client_id: str | None = None,
        job: str | None = None,
        *,
        run_name: str | None = None,
        experiment_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> None:
        self._tags = dict(checked_tags(tags or {}, single=False))  # before anything starts
        self._own_session = session is None
        self._session = session or Session(receiver, client_id=client_id, job=job)
        self._run_name = run_name or self._session.config.client_id
        self._experiment = experiment_name or ""
        self._record: RunRecord | None = None

    @property
    def run(self) -> RunRecord:
        """The site's run (started at the first call)."""
        if self._record is None:
            self._record = self._session.start_run(
                self._run_name, experiment=self._experiment, tags=self._tags
            )
        return self._record

    @property
    def run_id(self) -> str:
        """MLflow's id of the site's run (bounded wait), else its run key."""
        return self._session.run_id(self.run)

    def log_param(self, key: str, value: Any) -> None:
        """Logs a param (as ``str(value)``)."""
        record = self.run
        checked = checked_params(record.params, {key: value}, self._id, single=True)
        self._session.log_params(record, checked)

    def log_params(self, values: Mapping[str, Any]) -> None:
        """Logs several params; all are checked before any is logged."""
        record = self.run
        self._session.log_params(
            record, checked_params(record.params, values, self._id, single=False)
        )

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Logs one metric point at ``step`` (default 0), stamped now."""
        self.log_metrics({key: value}, step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Logs several metrics at one step; all are checked before any is logged."""
        record = self.run
        now = now_ms()
        points = [
            (key, *metric_point(key, value, step, None, now_ms=now, prefix=f"metrics[{i}]"))
            for i, (key, value) in enumerate(metrics.items())
        ]
        for key, value, step_i, ts in points:
            record.metrics[key] = value
            self._session.writer.enqueue(record.handle, Metric(key, value, step_i, ts))

    def log_text(self, text: str, artifact_file_path: str) -> None:
        """Logs a string as a UTF-8 text file of the run's artifacts."""
        record = self.run
        norm = posixpath.normpath(artifact_file_path)
        directory, name = posixpath.dirname(norm), posixpath.basename(norm)
        verify_artifact_path(directory or None)
        path = self._session.artifacts.new_path(name)
        try:
            path.write_text(text, encoding="utf-8")
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise
        self._session.log_staged(record, path, directory, name)

    def set_tag(self, key: str, tag: Any) -> None:
        """Sets a tag (as ``str(tag)``)."""
        self._session.set_tags(self.run, checked_tags({key: tag}, single=True))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Sets several tags; all are checked before any is set."""
        self._session.set_tags(self.run, checked_tags(tags, single=False))

    def _id(self) -> str:
        return self._session.run_id(self.run)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Waits until the receiver has everything logged so far."""
        return self._session.flush(timeout_s)

    def close(self, status: str = "FINISHED", timeout_s: float | None = None) -> int:
        """Ends the site's run with ``status`` and, if this writer made its session, delivers
        and stops it; returns what could not be delivered."""
        if self._record is not None and self._record.status == "RUNNING":
            self._session.end_run(self._record, status)
        return self._session.close(timeout_s) if self._own_session else 0

    def __enter__(self) -> MLflowWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close("FAILED" if exc_type is not None else "FINISHED")
