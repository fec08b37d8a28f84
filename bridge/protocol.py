"""Protocol constants both sides must agree on, beyond what the .proto files say."""

INGEST_SERVICE = "trackbridge.v1.Ingest"
"""Full name of the ingest service (also its gRPC health service name)."""

PUBLISH_METHOD = f"/{INGEST_SERVICE}/Publish"
"""The Publish method path, for sending pre-serialized batches."""

RETRY_AFTER_KEY = "retry-after-ms"
"""Trailing metadata sent with RESOURCE_EXHAUSTED: milliseconds to back off before retrying."""
