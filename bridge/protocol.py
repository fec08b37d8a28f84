"""Protocol constants both sides must agree on, beyond what the .proto files say."""

INGEST_SERVICE = "trackbridge.v1.Ingest"
"""Full name of the ingest service (also its gRPC health service name)."""

PUBLISH_METHOD = f"/{INGEST_SERVICE}/Publish"
"""The Publish method path, for sending pre-serialized batches."""

RETRY_AFTER_KEY = "retry-after-ms"
"""Trailing metadata sent with RESOURCE_EXHAUSTED: milliseconds to back off before retrying."""

AUTHORIZATION_KEY = "authorization"
"""Metadata key of a bearer token, ``Bearer <token>``: a client's, or a viewer's on Watch."""

ARTIFACTS_SERVICE = "trackbridge.v1.Artifacts"
"""Full name of the artifact service (files stream there, apart from the events)."""

ARTIFACT_CHUNK_BYTES = 1024 * 1024
"""Largest data chunk of an artifact upload; the receiver refuses larger ones."""

TRACKING_SERVICE = "trackbridge.v1.Tracking"
"""Full name of the service that answers MLflow's tracking and registry calls (tracking.proto)."""

JOURNALED_CALLS = frozenset(
    {
        "mlflow.DeleteRun",
        "mlflow.RestoreRun",
        "mlflow.LogInputs",
        "mlflow.LogOutputs",
        "mlflow.LogBatch",
        "mlflow.FinalizeLoggedModel",
        "mlflow.SetLoggedModelTags",
        "mlflow.DeleteLoggedModelTag",
        "mlflow.LogLoggedModelParamsRequest",
        "mlflow.DeleteLoggedModel",
    }
)
"""MLflow writes that travel in a run's event stream (``MlflowCall`` events), applied in order
with its metrics, params and tags. ``LogBatch`` carries metrics tied to a logged model or a
dataset (the plain Metric event has no room for those)."""

MAX_CALL_BYTES = 1024 * 1024
"""Largest serialized request an ``MlflowCall`` event may carry."""

AWAIT_RUN_ID_KEY = "trackbridge-await-run-id-ms"
"""Metadata of a GetRun whose caller waits for the run's MLflow id (a ``start_run``): the
receiver answers once it has the id, or after this many milliseconds (an older receiver answers
at once, and the client asks again)."""
