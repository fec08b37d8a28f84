"""Zero-code mode: the real ``mlflow`` package with ``MLFLOW_TRACKING_URI=trackbridge://...``.

Read calls the bridge cannot serve name the MLflow server to read from; logging never waits
for an absent receiver (the events wait in the client's spool, and ``trackbridge sync``
delivers them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.compat import base_env, receiver_idle
from tests.support.mlflow_reads import all_points, job_runs
from tests.support.procs import free_port, wait_until

READS = """
import mlflow
from mlflow.tracking import MlflowClient

with mlflow.start_run(run_name="reader") as run:
    mlflow.log_metric("m", 1.0)
    for label, call in {
        "search_runs": lambda: mlflow.search_runs(),
        "metric history": lambda: MlflowClient().get_metric_history(run.info.run_id, "m"),
        "other run": lambda: mlflow.get_run("0123456789abcdef0123456789abcdef"),
    }.items():
        try:
            call()
        except mlflow.exceptions.MlflowException as exc:
            print(f"{label}|{exc.error_code}|{exc.message}")
    print("own run|" + mlflow.get_run(run.info.run_id).data.tags["mlflow.runName"])
"""

SWAPPED_READS = """
import client_sdk.mlflow as mlflow

with mlflow.start_run(run_name="reader"):
    try:
        mlflow.get_run("0123456789abcdef0123456789abcdef")
    except mlflow.MlflowException as exc:
        print(f"get_run|{exc.error_code}|{exc.message}")
    try:
        mlflow.search_runs()
    except AttributeError as exc:
        print(f"search_runs|AttributeError|{exc}")
"""

OFFLINE = """
import mlflow

with mlflow.start_run(run_name="offline") as run:
    mlflow.log_params({"lr": 0.1, "epochs": 5})
    for step in range(5000):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=1_700_000_800_000 + step)
    mlflow.set_tag("phase", "offline")
print("run id", run.info.run_id)
"""


def _python(code: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(120)
def test_read_calls_name_the_mlflow_server(
    receiver: Any, mlflow_server: Any, job: str, tmp_path: Path
) -> None:
    common = {"TRACKBRIDGE_JOB": job, "TRACKBRIDGE_SPOOL_DIR": str(tmp_path / "spool")}
    zero = base_env(MLFLOW_TRACKING_URI=f"trackbridge://{receiver.address}", **common)
    lines = dict(
        line.split("|", 1) for line in _python(READS, zero, tmp_path).splitlines() if "|" in line
    )
    assert lines.pop("own run") == "reader"  # the runs this process started are served
    assert sorted(lines) == ["metric history", "other run", "search_runs"]
    for label, text in lines.items():
        code, message = text.split("|", 1)
        assert code == "NOT_IMPLEMENTED", label
        assert f"the MLflow server at {mlflow_server.uri}" in message, label

    swapped = base_env(TRACKBRIDGE_RECEIVER=receiver.address, **common)
    lines = dict(
        line.split("|", 1)
        for line in _python(SWAPPED_READS, swapped, tmp_path).splitlines()
        if "|" in line
    )
    assert lines["get_run"].startswith("NOT_IMPLEMENTED|get_run reads from MLflow")
    assert mlflow_server.uri in lines["get_run"]
    assert "client_sdk.mlflow has no 'search_runs'" in lines["search_runs"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_logging_does_not_wait_for_an_absent_receiver(
    start_receiver: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    env = base_env(
        MLFLOW_TRACKING_URI=f"trackbridge://127.0.0.1:{port}",
        TRACKBRIDGE_JOB=job,
        TRACKBRIDGE_CLIENT_ID=f"{job}-offline",
        TRACKBRIDGE_SPOOL_DIR=str(spool),
        TRACKBRIDGE_RUN_ID_TIMEOUT_S="1",
    )
    out = _python(OFFLINE, env, tmp_path)
    assert "run id " in out
    assert list(spool.glob("*.spool.db")), "the undelivered events wait in the spool"

    receiver = start_receiver(extra_args=("--listen", f"127.0.0.1:{port}"))
    sync = subprocess.run(
        [sys.executable, "-m", "client_sdk.sync", str(spool), "--receiver", receiver.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sync.returncode == 0, sync.stdout + sync.stderr
    wait_until(lambda: receiver_idle(receiver.data_dir), 60, what="the receiver to drain")
    (run,) = [r for r in job_runs(mlflow_client, job) if r.info.run_name == "offline"]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "epochs": "5"}
    assert run.data.tags["phase"] == "offline"
    assert len(all_points(mlflow_client, run)["loss"]) == 5000
