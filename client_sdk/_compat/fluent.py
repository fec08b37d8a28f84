"""The fluent calls both faces of ``client_sdk.mlflow`` have, written once.

``client_sdk.mlflow`` is MLflow itself pointed at the receiver when the mlflow package is
installed (``client_sdk/plugin/fluent.py``) and trackbridge's light client without it
(``client_sdk/mlflow/_light.py``). The calls they share are the methods of ``Fluent`` below;
each face binds one ``Fluent`` to its ``Backend``, and the backend holds what really differs:
where the session and the active run come from, how an error is raised, what a call that is
not for the writer's path does, and where the tracking URI lives. Nothing here imports mlflow
(the light client runs without it).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from bridge.errors import MlflowException
from bridge.events import Metric
from client_sdk._compat.addressing import receiver_of
from client_sdk._compat.checks import metric_point
from client_sdk._compat.records import RunRecord, now_ms
from client_sdk._compat.session import Session
from client_sdk._rounds import RoundDefault

__all__ = ["Backend", "Fluent"]


class Backend(Protocol):
    """What one face of ``client_sdk.mlflow`` decides for the shared calls."""

    def current_session(self) -> Session | None:
        """The session in use; None when none was made (flush then has nothing to wait for)."""

    def session(self) -> Session:
        """The session to log through, made at first use; raises MLflow's error when the
        process logs somewhere else than a receiver."""

    def metric_run(
        self, run_id: str | None, model_id: str | None, dataset: Any
    ) -> tuple[Session, RunRecord] | None:
        """The session and the run of this process a metric call goes to (a run is started
        when none is active, as MLflow does); None hands the call to ``unserved``."""

    def error(self, exc: MlflowException) -> Exception:
        """A call-site check's error as this face raises it."""

    def operations(self, synchronous: bool | None) -> Any:
        """What a logging call returns for its ``synchronous`` argument."""

    def unserved(self, call: str, *args: Any) -> Any:
        """MLflow's own ``call`` with these arguments, for a call ``metric_run`` did not take."""

    def drain(self) -> None:
        """Waits for what this face queues before the writer (MLflow's async logging)."""

    def given_uri(self) -> str | None:
        """The URI ``get_tracking_uri`` shows as given to ``set_tracking_uri``, if any."""

    def receiver_uri(self) -> str:
        """``trackbridge://<receiver>`` of the receiver this process logs to."""

    def keep_uri(self, uri: str) -> None:
        """Keeps a tracking URI that names no receiver, for ``get_tracking_uri``."""

    def point_at(self, receiver: str, uri: str | None) -> None:
        """Logs to ``receiver`` from now on; ``uri`` is what ``set_tracking_uri`` was given
        (None from ``configure``)."""

    def configure(self, options: Mapping[str, object]) -> None:
        """Sets trackbridge's client options given (not None) for the sessions made from now
        on and closes the current ones."""


class Fluent:
    """The shared fluent calls, bound to one face's backend (``client_sdk.mlflow``'s module
    functions are this object's methods)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    # -- where to log --------------------------------------------------------------------------

    def set_tracking_uri(self, uri: str | Path) -> None:
        """Points logging at a receiver: ``trackbridge://host:port`` (or ``host:port``).

        Other tracking URIs (an MLflow server's ``http://...``, ``file:``, ``sqlite:``) are
        kept for ``get_tracking_uri`` but logging stays with the receiver
        (``TRACKBRIDGE_RECEIVER``): only the receiver talks to MLflow.
        """
        text = str(uri)
        receiver = receiver_of(text)
        if receiver is None:
            self._backend.keep_uri(text)
        else:
            self._backend.point_at(receiver, text)

    def get_tracking_uri(self) -> str:
        """``trackbridge://<receiver>``, or the URI given to ``set_tracking_uri``."""
        given = self._backend.given_uri()
        return given if given is not None else self._backend.receiver_uri()

    def configure(
        self,
        *,
        receiver: str | None = None,
        client_id: str | None = None,
        job: str | None = None,
        rank_zero_only: bool | None = None,
    ) -> None:
        """trackbridge's own settings (no MLflow equivalent); call before logging.

        Args:
            receiver: ``host:port`` of the receiver (as ``set_tracking_uri``).
            client_id: This client's id (else ``TRACKBRIDGE_CLIENT_ID``, else the host name).
            job: The job (MLflow experiment of the parent run; else ``TRACKBRIDGE_JOB``).
            rank_zero_only: In a distributed job, only rank 0 logs (else
                ``TRACKBRIDGE_RANK_ZERO_ONLY``); by default every rank logs to its own run.
        """
        options = {"client_id": client_id, "job": job, "rank_zero_only": rank_zero_only}
        self._backend.configure({k: v for k, v in options.items() if v is not None})
        if receiver is not None:
            self._backend.point_at(receiver, None)

    # -- waiting and rounds ------------------------------------------------------------------

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Waits until the receiver has everything logged so far (trackbridge's addition)."""
        session = self._backend.current_session()
        return session.flush(timeout_s) if session is not None else True

    def flush_async_logging(self) -> None:
        """As MLflow's: waits (up to a minute) until the receiver has what was logged."""
        self._backend.drain()
        self.flush(60.0)

    def federated_round(
        self,
        round: int,
        num_examples: int | None = None,
    ) -> AbstractContextManager[RoundDefault]:
        """``with mlflow.federated_round(3, num_examples=600):`` gives the metrics logged in
        the block that round and weight (trackbridge's addition; docs/how-to/rounds.md).

        Raises:
            MlflowException: INVALID_PARAMETER_VALUE for a round or count that is not a
                positive integer, or when MLflow logs somewhere else than a receiver.
        """
        return self._backend.session().writer.federated_round(round, num_examples)

    # -- metrics ---------------------------------------------------------------------------------

    def log_metric(  # noqa: PLR0917 - MLflow's signature
        self,
        key: str,
        value: float,
        step: int | None = None,
        synchronous: bool | None = None,
        timestamp: int | None = None,
        run_id: str | None = None,
        model_id: str | None = None,
        dataset: Any = None,
    ) -> Any:
        """Logs one metric point: checked as MLflow checks it, appended to memory, never
        waiting on the network.

        ``value`` may be a number, a numpy scalar or one-element array, or a one-element torch
        tensor (one on an accelerator is read on the sender thread, without a device sync
        here). A call for a model, a dataset or a run this process did not start is MLflow's.
        """
        backend = self._backend
        target = backend.metric_run(run_id, model_id, dataset)
        if target is None:
            return backend.unserved(
                "log_metric", key, value, step, synchronous, timestamp, run_id, model_id, dataset
            )
        try:
            point, step_i, ts = metric_point(key, value, step, timestamp, now_ms=now_ms())
        except MlflowException as exc:
            raise backend.error(exc) from None
        session, record = target
        record.metrics[key] = point
        session.writer.enqueue(record.handle, Metric(key, point, step_i, ts))
        return backend.operations(synchronous)

    def log_metrics(  # noqa: PLR0917 - MLflow's signature
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        synchronous: bool | None = None,
        run_id: str | None = None,
        timestamp: int | None = None,
        model_id: str | None = None,
        dataset: Any = None,
    ) -> Any:
        """Logs several metrics at one step and time; all are checked before any is logged."""
        backend = self._backend
        target = backend.metric_run(run_id, model_id, dataset)
        if target is None:
            return backend.unserved(
                "log_metrics",
                dict(metrics),
                step,
                synchronous,
                run_id,
                timestamp,
                model_id,
                dataset,
            )
        now = now_ms()
        try:
            points = [
                (key, *metric_point(key, v, step, timestamp, now_ms=now, prefix=f"metrics[{i}]"))
                for i, (key, v) in enumerate(metrics.items())
            ]
        except MlflowException as exc:
            raise backend.error(exc) from None
        session, record = target
        enqueue = session.writer.enqueue
        for key, point, step_i, ts in points:
            record.metrics[key] = point
            enqueue(record.handle, Metric(key, point, step_i, ts))
        return backend.operations(synchronous)
