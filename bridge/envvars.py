"""Every environment variable trackbridge reads, in one place.

The receiver also honours MLflow's own ``MLFLOW_*`` variables (tracking URI, credentials, TLS);
those are read by MLflow itself and never by a client.
"""

TRACKBRIDGE_RECEIVER = "TRACKBRIDGE_RECEIVER"
"""Client: the receiver's address ``host:port``, or several comma-separated (one is used at a
time, picked at random; the client moves to another when it fails)."""

TRACKBRIDGE_CLIENT_ID = "TRACKBRIDGE_CLIENT_ID"
"""Client: this client's id (one MLflow run per client and job); default: the host name."""

TRACKBRIDGE_JOB = "TRACKBRIDGE_JOB"
"""Client: the job (MLflow experiment and parent run) this client belongs to."""

TRACKBRIDGE_SPOOL_DIR = "TRACKBRIDGE_SPOOL_DIR"
"""Client: directory of the durable spool of unacknowledged events; "" disables it."""

TRACKBRIDGE_SYSTEM_METRICS = "TRACKBRIDGE_SYSTEM_METRICS"
"""Client: ``1`` samples the host's CPU, memory, disk, network and NVIDIA GPUs into each run
(``Writer(system_metrics=True)``; the light ``client_sdk.mlflow`` as
``mlflow.enable_system_metrics_logging()``); needs ``pip install 'trackbridge[system]'``."""

TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S = "TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S"
"""Client: seconds between two system metrics samples (default 10, as MLflow's)."""

TRACKBRIDGE_DATA_DIR = "TRACKBRIDGE_DATA_DIR"
"""Receiver: directory for its durable queue and the embedded MLflow store."""

TRACKBRIDGE_LISTEN = "TRACKBRIDGE_LISTEN"
"""Receiver: the gRPC listen address, ``host:port``."""

TRACKBRIDGE_FLUSH_INTERVAL_S = "TRACKBRIDGE_FLUSH_INTERVAL_S"
"""Receiver: seconds between timed flushes to MLflow."""

TRACKBRIDGE_BULK_WRITE = "TRACKBRIDGE_BULK_WRITE"
"""Receiver: ``0`` (or ``false``, ``off``) writes metrics, params and tags through MLflow's own
SQL store instead of the bulk writer, on a database-backed MLflow (``--no-bulk-write``)."""

MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"
"""Receiver: MLflow's own tracking URI variable; the embedded SQLite store when unset."""

TRACKBRIDGE_HTTP_LISTEN = "TRACKBRIDGE_HTTP_LISTEN"
"""Receiver: the live view's HTTP address ``host:port`` or ``off`` (default: loopback, port+1)."""

TRACKBRIDGE_VIEWER_TOKEN = "TRACKBRIDGE_VIEWER_TOKEN"  # noqa: S105 - a name, not a secret
"""Receiver and viewers (top, tail): the token the live page, /metrics and Watch require."""

MLFLOW_EXPERIMENT_NAME = "MLFLOW_EXPERIMENT_NAME"
"""Client (``client_sdk.mlflow``): MLflow's own variable naming the default experiment."""

TRACKBRIDGE_RUN_ID_TIMEOUT_S = "TRACKBRIDGE_RUN_ID_TIMEOUT_S"
"""Client: longest wait, in seconds, for the receiver to report a new run's MLflow id when
``run.info.run_id`` is read (default 5; past it the run's own key stands in for the id)."""

TRACKBRIDGE_RANK_ZERO_ONLY = "TRACKBRIDGE_RANK_ZERO_ONLY"
"""Client: ``1`` makes only rank 0 of a distributed job log; other ranks validate and drop."""

TRACKBRIDGE_TOKEN = "TRACKBRIDGE_TOKEN"  # noqa: S105 - a name, not a secret
"""Client: this client's bearer token, as ``trackbridge token issue`` printed it."""

TRACKBRIDGE_TOKEN_FILE = "TRACKBRIDGE_TOKEN_FILE"  # noqa: S105 - a name, not a secret
"""Client: a file holding the bearer token (read when ``TRACKBRIDGE_TOKEN`` is unset)."""

TRACKBRIDGE_TLS_CA = "TRACKBRIDGE_TLS_CA"
"""Client: PEM bundle of the CA(s) the receiver's certificate must chain to; turns TLS on."""

TRACKBRIDGE_TLS_CERT = "TRACKBRIDGE_TLS_CERT"
"""Client: PEM certificate this client presents to a receiver that requires mutual TLS."""

TRACKBRIDGE_TLS_KEY = "TRACKBRIDGE_TLS_KEY"
"""Client: PEM private key of ``TRACKBRIDGE_TLS_CERT``."""

TRACKBRIDGE_SERVE_TLS_CERT = "TRACKBRIDGE_SERVE_TLS_CERT"
"""Receiver: PEM certificate (chain) it serves gRPC with; re-read when the file changes."""

TRACKBRIDGE_SERVE_TLS_KEY = "TRACKBRIDGE_SERVE_TLS_KEY"
"""Receiver: PEM private key of ``TRACKBRIDGE_SERVE_TLS_CERT``."""

TRACKBRIDGE_SERVE_TLS_CLIENT_CA = "TRACKBRIDGE_SERVE_TLS_CLIENT_CA"
"""Receiver: PEM CA bundle client certificates must chain to; turns on mutual TLS."""

TRACKBRIDGE_TOKEN_KEYS_FILE = "TRACKBRIDGE_TOKEN_KEYS_FILE"  # noqa: S105 - a name, not a secret
"""Receiver and ``token issue``: the fleet's signed-token keys file (``<key id> <secret>``
lines, the first signs); re-read by receivers when it changes."""

TRACKBRIDGE_TOKEN_KEYS = "TRACKBRIDGE_TOKEN_KEYS"  # noqa: S105 - a name, not a secret
"""Receiver and ``token issue``: the fleet's signed-token keys themselves, when there is no
file (the same lines)."""

TRACKBRIDGE_TOKEN_REVOCATIONS_FILE = "TRACKBRIDGE_TOKEN_REVOCATIONS_FILE"  # noqa: S105
"""Receiver and ``token revoke``: the fleet's revocation list of signed tokens; re-read by
receivers when it changes."""

MLFLOW_TRACKING_USERNAME = "MLFLOW_TRACKING_USERNAME"
"""Receiver: MLflow's basic-auth user name (read by MLflow itself)."""

MLFLOW_TRACKING_PASSWORD = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 - a name, not a secret
"""Receiver: MLflow's basic-auth password (read by MLflow itself; never logged)."""

MLFLOW_TRACKING_TOKEN = "MLFLOW_TRACKING_TOKEN"  # noqa: S105 - a name, not a secret
"""Receiver: MLflow bearer token (read by MLflow itself; never logged)."""

MLFLOW_TRACKING_USERNAME_FILE = "MLFLOW_TRACKING_USERNAME_FILE"
"""Receiver: a file holding ``MLFLOW_TRACKING_USERNAME``; read at start and exported for MLflow."""

MLFLOW_TRACKING_PASSWORD_FILE = "MLFLOW_TRACKING_PASSWORD_FILE"  # noqa: S105 - a name
"""Receiver: a file holding ``MLFLOW_TRACKING_PASSWORD`` (e.g. a Docker or Kubernetes secret)."""

MLFLOW_TRACKING_TOKEN_FILE = "MLFLOW_TRACKING_TOKEN_FILE"  # noqa: S105 - a name, not a secret
"""Receiver: a file holding ``MLFLOW_TRACKING_TOKEN``; read at start and exported for MLflow."""

MLFLOW_TRACKING_SERVER_CERT_PATH = "MLFLOW_TRACKING_SERVER_CERT_PATH"
"""Receiver: CA bundle MLflow's HTTPS certificate is verified against (read by MLflow)."""

MLFLOW_TRACKING_CLIENT_CERT_PATH = "MLFLOW_TRACKING_CLIENT_CERT_PATH"
"""Receiver: client certificate (PEM, with its key) the receiver presents to MLflow."""

MLFLOW_TRACKING_INSECURE_TLS = "MLFLOW_TRACKING_INSECURE_TLS"
"""Receiver: ``true`` skips verifying MLflow's certificate (never in production)."""

TRACKBRIDGE_READ_SCOPE = "TRACKBRIDGE_READ_SCOPE"
"""Receiver: what clients may read back (``own``, ``job`` or ``all``; default ``job``)."""
TRACKBRIDGE_SINKS = "TRACKBRIDGE_SINKS"
"""Receiver: where events go, comma-separated ``mlflow`` and ``jsonl:DIR`` (default ``mlflow``)."""
TRACKBRIDGE_QUEUE = "TRACKBRIDGE_QUEUE"
"""Receiver: ``sqlite`` (its own queue, the default) or ``nats://host:port[,...]`` (fleet mode)."""

TRACKBRIDGE_READ_TIMEOUT_S = "TRACKBRIDGE_READ_TIMEOUT_S"
"""Client: how long an MLflow read through the receiver may take, in seconds (default 60)."""
