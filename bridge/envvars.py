"""Every environment variable trackbridge reads, in one place.

The receiver also honours MLflow's own ``MLFLOW_*`` variables (tracking URI, credentials, TLS);
those are read by MLflow itself and never by a client.
"""

TRACKBRIDGE_RECEIVER = "TRACKBRIDGE_RECEIVER"
"""Client: the receiver's address, ``host:port``."""

TRACKBRIDGE_CLIENT_ID = "TRACKBRIDGE_CLIENT_ID"
"""Client: this client's id (one MLflow run per client and job); default: the host name."""

TRACKBRIDGE_JOB = "TRACKBRIDGE_JOB"
"""Client: the job (MLflow experiment and parent run) this client belongs to."""

TRACKBRIDGE_SPOOL_DIR = "TRACKBRIDGE_SPOOL_DIR"
"""Client: directory of the durable spool of unacknowledged events; "" disables it."""

TRACKBRIDGE_DATA_DIR = "TRACKBRIDGE_DATA_DIR"
"""Receiver: directory for its durable queue and the embedded MLflow store."""

TRACKBRIDGE_LISTEN = "TRACKBRIDGE_LISTEN"
"""Receiver: the gRPC listen address, ``host:port``."""

TRACKBRIDGE_FLUSH_INTERVAL_S = "TRACKBRIDGE_FLUSH_INTERVAL_S"
"""Receiver: seconds between timed flushes to MLflow."""

MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"
"""Receiver: MLflow's own tracking URI variable; the embedded SQLite store when unset."""
