"""The writes that travel in a run's event stream (``MlflowCall`` events), applied by the
flusher in order with the run's other events, with the same handlers as the synchronous calls.
The request's run is the batch's run (the receiver knows its MLflow id; the client may not
yet); logged models must be the batch's client's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from bridge.events import MlflowCall
from bridge.protocol import JOURNALED_CALLS
from server.flush.sink import RunRef
from server.tracking.calls import decode
from server.tracking.reads import Context
from server.tracking.scope import Caller, ReadScope

_REFUSED = frozenset({"PERMISSION_DENIED", "NOT_IMPLEMENTED"})


class JournalApplier:
    """Applies ``MlflowCall`` events for the flusher (its ``CallApplier``)."""

    def __init__(
        self,
        store: Any,
        registry: Callable[[], Any],
        experiments_of: Callable[[Caller], set[str]],
        artifact_location: str | None,
        tracking_uri: str,
    ) -> None:
        self._store = store
        self._registry = registry
        self._experiments_of = experiments_of
        self._artifact_location = artifact_location
        self._tracking_uri = tracking_uri

    def apply(self, run: RunRef, client_id: str, job: str, call: MlflowCall) -> None:
        """Writes one call to MLflow as the batch's client, about the batch's run."""
        if call.method not in JOURNALED_CALLS:
            raise MlflowException(
                f"{call.method} does not travel in the event stream",
                error_code=INVALID_PARAMETER_VALUE,
            )
        request, handler = decode(call.method, call.request)
        if "run_id" in request.DESCRIPTOR.fields_by_name:
            request.run_id = run.run_id  # type: ignore[attr-defined]
        ctx = Context(
            store=self._store,
            registry=self._registry,
            caller=Caller(client_id, job, ReadScope.OWN),
            experiments_of=self._experiments_of,
            artifact_location=self._artifact_location,
            tracking_uri=self._tracking_uri,
        )
        try:
            handler(ctx, request)
        except MlflowException as exc:
            if exc.error_code in _REFUSED:
                # Not the client's to change: no retry can fix it (the flusher keeps the reason).
                raise MlflowException(exc.message, error_code=INVALID_PARAMETER_VALUE) from None
            raise
