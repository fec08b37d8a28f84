"""The receiver owns MLflow's credentials: a real ``mlflow server --app-name basic-auth``, a
user with EDIT on one experiment only, a receiver that logs as that user (password from a file),
clients that hold no MLflow setting at all; a wrong password reported by ``doctor`` and
``status`` while events wait in the queue, and delivered once the password is fixed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.protocol import INGEST_SERVICE
from tests.support.mlflow_reads import child_runs, job_runs, wait_for_children
from tests.support.procs import (
    CLIENTS_DIR,
    ReceiverProcess,
    child_env,
    free_port,
    launch_receiver,
    stop_mlflow_server,
    wait_until,
)
from tests.support.security import (
    LEDGER,
    PUBLISH,
    AuthMlflow,
    as_admin,
    auth_service_client,
    batch,
    call,
    issue_token,
    launch_auth_mlflow,
    no_secret_leaks,
    trackbridge,
    write_secret,
)

__all__ = ["no_secret_leaks"]
pytestmark = [pytest.mark.usefixtures("no_secret_leaks"), pytest.mark.slow]

ENV_CLIENT = CLIENTS_DIR / "env_client.py"
BASE_TS = 1_700_000_000_000


@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMlflow]:
    server = launch_auth_mlflow(tmp_path_factory.mktemp("auth-mlflow"))
    try:
        yield server
    finally:
        stop_mlflow_server(server.server)


@pytest.fixture
def service_user(auth_mlflow: AuthMlflow, job: str) -> tuple[str, str]:
    """A non-admin MLflow user with EDIT on the job's experiment and nothing else (another
    experiment, ``<job>-other``, exists but is not theirs). Returns ``(user, password)``."""
    from mlflow.tracking import MlflowClient

    user = f"svc-{uuid.uuid4().hex[:8]}"
    password = LEDGER.remember(f"pw-{uuid.uuid4().hex}")
    with as_admin(auth_mlflow):
        admin = auth_service_client(auth_mlflow)
        admin.create_user(user, password)
        client = MlflowClient(auth_mlflow.uri)
        experiment_id = client.create_experiment(job)
        client.create_experiment(f"{job}-other")
        admin.grant_user_permission(user, "experiment", experiment_id, "EDIT")
    return user, password


@pytest.fixture
def receiver_credentials(
    monkeypatch: pytest.MonkeyPatch, service_user: tuple[str, str], tmp_path: Path
) -> Path:
    """The receiver's environment: the user name, and the password in a file (whose content the
    test changes). Only receivers and ``doctor`` started by the test inherit it."""
    for name in ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    password_file = tmp_path / "mlflow-password.secret"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", service_user[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD_FILE", str(password_file))
    return password_file


@contextlib.contextmanager
def receiver_at(
    root: Path, uri: str, data_dir: Path, *, drained: bool = True
) -> Iterator[ReceiverProcess]:
    receiver = launch_receiver(
        root, uri, data_dir=data_dir, flush_interval_s=0.3, shutdown_timeout_s=3
    )
    try:
        yield receiver
    finally:
        code = receiver.stop()
        assert code == (0 if drained else 1), receiver.log_tail()


def run_client(receiver: ReceiverProcess, token: str, tmp_path: Path, job: str, points: int) -> Any:
    """A site's client process: configured by TRACKBRIDGE_* only, no MLflow setting at all."""
    token_file = write_secret(tmp_path / f"token-{uuid.uuid4().hex[:6]}.secret", token)
    env = {k: v for k, v in child_env().items() if not k.startswith("MLFLOW_")}
    env.update(
        TRACKBRIDGE_RECEIVER=receiver.address,
        TRACKBRIDGE_CLIENT_ID="site-1",
        TRACKBRIDGE_JOB=job,
        TRACKBRIDGE_TOKEN_FILE=str(token_file),
        TRACKBRIDGE_SPOOL_DIR=str(tmp_path / "client-spool"),
    )
    result = subprocess.run(
        [sys.executable, str(ENV_CLIENT), "--points", str(points)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    LEDGER.output("client stdout", result.stdout)
    LEDGER.output("client stderr", result.stderr)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mlflow_settings"] == [], "a client holds no MLflow setting"
    assert report["mlflow_loaded"] is False, "a client never loads MLflow"
    return report


def points_in_mlflow(auth: AuthMlflow, job: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    with as_admin(auth):
        client = MlflowClient(auth.uri)
        runs = child_runs(job_runs(client, job))
        return sorted(len(client.get_metric_history(r.info.run_id, "x")) for r in runs)


@pytest.mark.timeout(300)
def test_the_receiver_logs_as_a_user_who_may_write_to_one_experiment_only(
    tmp_path: Path,
    auth_mlflow: AuthMlflow,
    service_user: tuple[str, str],
    receiver_credentials: Path,
    job: str,
) -> None:
    write_secret(receiver_credentials, service_user[1])
    doctor = trackbridge(
        "doctor", "--tracking-uri", auth_mlflow.uri, "--experiment", job,
        "--experiment", f"{job}-other",
    )  # fmt: skip
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    assert any(f"experiment {job!r}: writable" in line for line in lines), doctor.stdout
    assert (
        f"FAIL  experiment '{job}-other': the receiver's MLflow user lacks a permission (HTTP 403)"
        in doctor.stdout
    )
    assert f"basic auth as user {service_user[0]!r}" in doctor.stdout
    ok = trackbridge("doctor", "--tracking-uri", auth_mlflow.uri, "--experiment", job)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all checks passed" in ok.stdout

    data_dir = tmp_path / "receiver-data"
    token = issue_token(data_dir, "site-1")
    with receiver_at(tmp_path, auth_mlflow.uri, data_dir) as receiver:
        assert run_client(receiver, token, tmp_path, job, points=300)["undelivered"] == 0
        wait_until(lambda: points_in_mlflow(auth_mlflow, job) == [300], 90, interval_s=0.5,
                   what="300 points in MLflow")  # fmt: skip
        status = trackbridge("status", "--data-dir", str(data_dir))
        assert "MLflow: ok" in status.stdout, status.stdout
    # With no --experiment, doctor checks the jobs the receiver's queue knows.
    by_queue = trackbridge("doctor", "--tracking-uri", auth_mlflow.uri, "--data-dir", str(data_dir))
    assert by_queue.returncode == 0, by_queue.stdout + by_queue.stderr
    assert f"experiment {job!r}: writable" in by_queue.stdout


@pytest.mark.timeout(420)
def test_a_wrong_password_is_reported_and_events_wait_until_it_is_fixed(
    tmp_path: Path,
    auth_mlflow: AuthMlflow,
    service_user: tuple[str, str],
    receiver_credentials: Path,
    job: str,
) -> None:
    wrong = LEDGER.remember(f"wrong-{uuid.uuid4().hex}")
    write_secret(receiver_credentials, wrong)
    doctor = trackbridge("doctor", "--tracking-uri", auth_mlflow.uri, "--experiment", job)
    assert doctor.returncode == 1
    assert "ok    reach: MLflow answers" in doctor.stdout, doctor.stdout
    assert "FAIL  login: MLflow refused the receiver's credentials (HTTP 401)" in doctor.stdout
    assert "MLFLOW_TRACKING_PASSWORD_FILE" in doctor.stdout

    data_dir = tmp_path / "receiver-data"
    token = issue_token(data_dir, "site-1")
    with receiver_at(tmp_path, auth_mlflow.uri, data_dir, drained=False) as receiver:
        assert run_client(receiver, token, tmp_path, job, points=200)["undelivered"] == 0

        def reported() -> Any:
            result = trackbridge("status", "--data-dir", str(data_dir), "--json")
            status = json.loads(result.stdout)
            mlflow = status["mlflow"]
            return status if mlflow and not mlflow["ok"] else None

        status = wait_until(reported, 60, interval_s=0.5, what="status to report MLflow failing")
        assert "HTTP 401" in status["mlflow"]["diagnosis"], status["mlflow"]
        assert "401" in status["mlflow"]["error"]
        assert status["backlog_events"] == 202, "run start, 200 points, run end: all queued"
        table = trackbridge("status", "--data-dir", str(data_dir)).stdout
        assert "MLflow: FAILING: MLflow refused the receiver's credentials" in table, table
        assert points_in_mlflow(auth_mlflow, job) == []
        health = trackbridge("health", "--receiver", receiver.address, "--service", INGEST_SERVICE)
        assert health.returncode == 1 and "NOT_SERVING" in health.stdout, health.stdout
        # One WARNING says it, with the cause and the doctor; no warning per attempt.
        log = receiver.log_tail()
        told = [line for line in log.splitlines() if " WARNING " in line]
        assert len(told) == 1, log
        assert "HTTP 401" in told[0] and "trackbridge doctor" in told[0], told

    # The operator fixes the password and restarts the receiver: the queue flows.
    write_secret(receiver_credentials, service_user[1])
    with receiver_at(tmp_path, auth_mlflow.uri, data_dir):
        wait_until(lambda: points_in_mlflow(auth_mlflow, job) == [200], 90, interval_s=0.5,
                   what="the queued points in MLflow")  # fmt: skip

        def healthy() -> Any:
            status = json.loads(trackbridge("status", "--data-dir", str(data_dir), "--json").stdout)
            return status["mlflow"] and status["mlflow"]["ok"] and status["backlog_events"] == 0

        wait_until(healthy, 60, interval_s=0.5, what="status to report MLflow ok again")
    from mlflow.tracking import MlflowClient

    with as_admin(auth_mlflow):
        client = MlflowClient(auth_mlflow.uri)
        (run,) = wait_for_children(client, job, 1, timeout_s=30, terminal=False)
    assert run.data.tags["trackbridge.client_id"] == "site-1"


@pytest.mark.timeout(180)
def test_a_password_in_the_tracking_uri_reaches_no_log_and_no_status(tmp_path: Path) -> None:
    secret = LEDGER.remember(f"uri-{uuid.uuid4().hex}")
    uri = f"http://svc:{secret}@127.0.0.1:{free_port()}"  # nothing listens: every call fails
    receiver = launch_receiver(tmp_path, uri, shutdown_timeout_s=2, expected_exit_code=1)
    try:
        with grpc.insecure_channel(receiver.address) as channel:
            assert call(channel, PUBLISH, batch("site-1")).code == grpc.StatusCode.OK

        def failing() -> Any:
            result = trackbridge("status", "--data-dir", str(receiver.data_dir), "--json")
            mlflow = json.loads(result.stdout)["mlflow"]
            return mlflow if mlflow and not mlflow["ok"] else None

        mlflow = wait_until(failing, 60, interval_s=0.5, what="the MLflow error in status")
        assert "cannot be reached" in mlflow["diagnosis"], mlflow
        assert "svc:***@127.0.0.1" in mlflow["error"], mlflow
        wait_until(lambda: "svc:***@" in receiver.log_path.read_text(), 30,
                   what="the redacted URI in the receiver's log")  # fmt: skip
    finally:
        assert receiver.stop() == 1, receiver.log_tail()
