"""The production topology, natively: a throwaway PostgreSQL cluster, ``mlflow server`` on it with
basic auth, and helpers to look into receivers' queues and to publish hand-made batches."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from pathlib import Path

from bench.postgres import (  # the cluster itself lives with the benchmark, which starts one too
    Postgres,
    create_database,
    start_postgres,
    stop_postgres,
)
from tests.support.procs import MLFLOW_EXE, MlflowServer, free_port, stop_mlflow_server, wait_until

__all__ = ["Postgres", "create_database", "start_postgres", "stop_postgres"]

MLFLOW_START_TIMEOUT_S = 90.0
ADMIN_USER = "admin"
ADMIN_PASSWORD = "topology-admin-pw-0123"  # a throwaway test cluster's
FLASK_SECRET = "topology-flask-secret-0123456789"


def launch_auth_mlflow(root: Path, backend_uri: str, workers: int = 1) -> MlflowServer:
    """``mlflow server --app-name basic-auth`` on ``backend_uri``; the auth app keeps its users
    in its own SQLite file in ``root`` (``MLFLOW_AUTH_CONFIG_PATH``)."""
    root.mkdir(parents=True, exist_ok=True)
    auth_ini = root / "basic_auth.ini"
    auth_ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN_USER}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"  # as deploy/mlflow/basic_auth.ini
    )
    port = free_port()
    log_path = root / f"mlflow-auth-{port}.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_TRACKING_", "TRACKBRIDGE_"))
    }
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(auth_ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLFLOW_FLASK_SERVER_SECRET_KEY=FLASK_SECRET,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    cmd = [
        str(MLFLOW_EXE), "server",
        "--backend-store-uri", backend_uri,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", str(workers),
        "--app-name", "basic-auth",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", port, proc, log_path)
    try:
        wait_until(
            lambda: proc.poll() is not None or _healthy(f"{server.uri}/health"),
            MLFLOW_START_TIMEOUT_S,
            interval_s=0.3,
            what="mlflow server (basic-auth, PostgreSQL) to be healthy",
        )
        assert proc.poll() is None, f"mlflow server exited:\n{server.log_tail()}"
    except BaseException:
        stop_mlflow_server(server)
        raise
    return server


def _healthy(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def acked_by_run(data_dir: Path) -> dict[str, int]:
    """``{run_key: acked_seq}`` from a receiver's queue (read-only; {} before it exists)."""
    path = data_dir / "queue.db"
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        with contextlib.suppress(sqlite3.OperationalError):  # tables not created yet
            return dict(conn.execute("SELECT run_key, acked_seq FROM runs").fetchall())
        return {}
    finally:
        conn.close()


def log_contains(path: Path, text: str) -> bool:
    """Whether a process's log has ``text`` yet."""
    try:
        return text in path.read_text(errors="replace")
    except OSError:
        return False
