"""NVFlare migration: ``MLflowWriter`` with NVFlare's method names, and the runs NVFlare's own
``MLflowReceiver`` makes.

NVFlare learners log through ``nvflare.client.tracking.MLflowWriter`` (or the component
``nvflare.app_opt.tracking.mlflow.mlflow_writer.MLflowWriter``); NVFlare's server-side
``MLflowReceiver`` writes each site's events into MLflow. This class keeps the learner's calls
-- ``log_param``, ``log_params``, ``log_metric``, ``log_metrics`` (with ``step``),
``log_text``, ``set_tag``, ``set_tags`` -- and lands them as that receiver would (NVFlare 2.9,
``mlflow_receiver.py``): one flat run per site in the experiment (default ``FLARE FL
Experiment``), named ``{site}-{job_id[:6]}-{job_name}-{run_name}``, tagged ``job_id`` and
``run_name``, its description in ``mlflow.note.content``, no parent run, ended FINISHED when the
job's process ends (NVFlare's learners never close their writer) -- or KILLED by the
receiver's run lease if the process dies. Calls append to memory and return; bad input raises
MLflow's error at the call.

Where NVFlare's receiver is told its experiment, run name and run tags (its ``kw_args`` in the
job, as NVFlare's hello-pt-mlflow example has ``experiment_name="nvflare-fedavg-experiment"``),
this writer takes the same: ``MLflowWriter(kw_args=...)`` with the job's dict, or
``experiment_name=`` and friends, or ``MLFLOW_EXPERIMENT_NAME`` in the site's environment;
else NVFlare's defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from bridge import envvars
from bridge.events import Metric
from client_sdk._compat.checks import checked_params, checked_tags, metric_point
from client_sdk._compat.session import RunRecord, Session, now_ms
from client_sdk._files import stage_written

DEFAULT_EXPERIMENT_NAME = "FLARE FL Experiment"
"""NVFlare's MLflowReceiver default experiment."""
DEFAULT_RUN_NAME = "FLARE FL Run"
"""NVFlare's MLflowReceiver default run name (the last part of each site's run name)."""
_NOTE_TAG = "mlflow.note.content"


class MLflowWriter:
    """Logs one site's metrics, params, tags and texts to its run, through the receiver.

    Args:
        receiver: Receiver ``host:port`` (else ``TRACKBRIDGE_RECEIVER``).
        client_id: The site name (else ``TRACKBRIDGE_CLIENT_ID``, else the host name).
        job: The trackbridge job (else ``TRACKBRIDGE_JOB``).
        run_name: NVFlare's ``run_name`` (default ``FLARE FL Run``).
        experiment_name: NVFlare's ``experiment_name`` (else ``kw_args``'s, else
            ``MLFLOW_EXPERIMENT_NAME``, else ``FLARE FL Experiment``).
        tags: NVFlare's ``run_tags``.
        description: The run's description (NVFlare's ``mlflow.note.content`` run tag).
        job_id: NVFlare's job id (default: the trackbridge job).
        job_name: NVFlare's job name (default: the trackbridge job).
        session: Share an existing session instead (receiver, client_id and job are then
            ignored).
        kw_args: The ``kw_args`` of NVFlare's ``MLflowReceiver`` in the job:
            ``experiment_name``, ``run_name`` and ``run_tags`` are used as it uses them (the
            arguments above win); ``experiment_tags`` are not carried.
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
        description: str | None = None,
        job_id: str | None = None,
        job_name: str | None = None,
        session: Session | None = None,
        kw_args: Mapping[str, Any] | None = None,
    ) -> None:
        kw = dict(kw_args or {})
        run_name = run_name or kw.get("run_name")
        experiment_name = (
            experiment_name
            or kw.get("experiment_name")
            or os.environ.get(envvars.MLFLOW_EXPERIMENT_NAME)
        )
        tags = {**(kw.get("run_tags") or {}), **(tags or {})}
        checked_tags(tags, single=False)  # a bad tag raises before anything starts
        self._own_session = session is None
        self._session = session or Session(receiver, client_id=client_id, job=job)
        config = self._session.config
        site = config.client_id
        job_id = job_id or config.job
        name = f"{site}-{job_id[:6]}-{job_name or config.job}-{run_name or DEFAULT_RUN_NAME}"
        run_tags = dict(tags or {})
        self._description = description or str(run_tags.pop(_NOTE_TAG, ""))
        run_tags.update({"job_id": job_id, "run_name": name})
        self._run_name = name
        self._experiment = experiment_name or DEFAULT_EXPERIMENT_NAME
        self._tags = dict(checked_tags(run_tags, single=False))
        self._record: RunRecord | None = None
        self._session.exit_hooks.append(self._end_at_exit)

    @property
    def run(self) -> RunRecord:
        """The site's run (started at the first call)."""
        if self._record is None:
            self._record = self._session.start_run(
                self._run_name,
                experiment=self._experiment,
                tags=self._tags,
                description=self._description,
                top_level=True,
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
        if self._session.muted:
            return
        stage_written(
            self._session.artifacts,
            record.key,
            artifact_file_path,
            lambda path: path.write_text(text, encoding="utf-8"),
        )

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

    def _end_at_exit(self) -> None:
        # NVFlare's receiver ends every site's run FINISHED at the end of the job (whatever
        # the site did); a learner's process ending is that moment here.
        if self._record is not None and self._record.status == "RUNNING":
            self._session.end_run(self._record, "FINISHED")

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
