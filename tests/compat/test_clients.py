"""Torch and numpy values, distributed ranks, and the NVFlare writer, through a real receiver."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import threading
from typing import Any

import numpy as np
import pytest
import torch

from bridge.events import Metric
from client_sdk import Writer
from client_sdk._compat.session import Session
from client_sdk._values import DeviceScalar, fluent_value, tensor_value
from client_sdk.integrations.nvflare import MLflowWriter
from tests.support.compat import base_env, receiver_idle
from tests.support.mlflow_reads import all_points, job_runs, user_tags
from tests.support.procs import wait_until

TS = 1_700_000_600_000
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _client_runs(client: Any, job: str) -> list[Any]:
    return [r for r in job_runs(client, job) if r.data.tags.get("trackbridge.role") != "parent"]


def _drained(receiver: Any) -> None:
    wait_until(lambda: receiver_idle(receiver.data_dir), 60, what="the receiver to drain")


# -- values ---------------------------------------------------------------------------------------


def test_values_convert_as_mlflow_converts_them() -> None:
    assert fluent_value(np.float32(0.5)) == 0.5
    assert fluent_value(np.array(2.5)) == 2.5
    assert fluent_value(True) == 1.0
    assert fluent_value("1.5") == 1.5
    assert fluent_value("abc") == "abc"  # left for the caller to refuse
    assert fluent_value(torch.tensor(3.0)) == 3.0
    assert isinstance(tensor_value(torch.tensor([4.0])), float)


class _DeviceTensorStandIn:
    """Records which thread reads it, like a CUDA scalar's ``.item()`` would sync that thread."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.read_on: list[str] = []

    def item(self) -> float:
        self.read_on.append(threading.current_thread().name)
        return self.value


@pytest.mark.timeout(120)
def test_device_scalars_are_read_on_the_sender_thread(
    receiver: Any, mlflow_client: Any, job: str
) -> None:
    stand_in = _DeviceTensorStandIn(0.25)
    with Writer(receiver=receiver.address, client_id=f"{job}-c", job=job) as writer:
        run = writer.start_run("device")
        writer.enqueue(run, Metric("gpu_loss", DeviceScalar(stand_in), 0, TS))  # type: ignore[arg-type]
        assert stand_in.read_on == []  # nothing read on the training thread
        assert writer.flush(30)
    assert stand_in.read_on == ["trackbridge-sender"]
    _drained(receiver)
    (mlflow_run,) = _client_runs(mlflow_client, job)
    assert all_points(mlflow_client, mlflow_run) == {"gpu_loss": [("gpu_loss", 0.25, 0, TS)]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("device", DEVICES)
def test_tensors_and_numpy_scalars_as_metric_values(
    receiver: Any, mlflow_client: Any, job: str, device: str
) -> None:
    loss = torch.tensor(0.5, device=device)
    with Writer(receiver=receiver.address, client_id=f"{job}-c", job=job) as writer:
        writer.start_run("values")
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("error")  # a device sync here would raise
        try:
            writer.log_metric("loss", loss, step=0, timestamp=TS)
            loss.add_(1.0)  # a later in-place update does not change what was logged
            writer.log_metric("loss", loss, step=1, timestamp=TS)
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        writer.log_metric("np", np.float32(0.25), step=0, timestamp=TS)
        writer.log_metrics({"np64": np.float64(1.5), "t": torch.tensor([2.0])}, 0, TS)
        assert writer.flush(30)
    _drained(receiver)
    (run,) = _client_runs(mlflow_client, job)
    assert all_points(mlflow_client, run) == {
        "loss": [("loss", 0.5, 0, TS), ("loss", 1.5, 1, TS)],
        "np": [("np", 0.25, 0, TS)],
        "np64": [("np64", 1.5, 0, TS)],
        "t": [("t", 2.0, 0, TS)],
    }


# -- distributed ranks ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_each_rank_logs_to_its_own_run(receiver: Any, mlflow_client: Any, job: str) -> None:
    for rank in range(2):
        env = {"RANK": str(rank), "WORLD_SIZE": "2", "TRACKBRIDGE_SPOOL_DIR": ""}
        session = Session(receiver.address, client_id="trainer", job=job, env=env)
        assert session.config.client_id == f"trainer-rank{rank}"
        record = session.start_run("train")
        session.writer.enqueue(record.handle, Metric("loss", float(rank), 0, TS))
        session.end_run(record, "FINISHED")
        assert session.close(30) == 0
    _drained(receiver)
    runs = {r.data.tags["trackbridge.client_id"]: r for r in _client_runs(mlflow_client, job)}
    assert sorted(runs) == ["trainer-rank0", "trainer-rank1"]
    for rank in range(2):
        run = runs[f"trainer-rank{rank}"]
        assert run.data.tags["trackbridge.rank"] == str(rank)
        assert all_points(mlflow_client, run) == {"loss": [("loss", float(rank), 0, TS)]}


@pytest.mark.timeout(120)
def test_rank_zero_only_keeps_the_other_ranks_silent(
    receiver: Any, mlflow_client: Any, job: str
) -> None:
    for rank in range(3):
        env = {"RANK": str(rank), "WORLD_SIZE": "3", "TRACKBRIDGE_RANK_ZERO_ONLY": "1"}
        env["TRACKBRIDGE_SPOOL_DIR"] = ""
        session = Session(receiver.address, client_id="trainer", job=job, env=env)
        assert session.muted == (rank != 0)
        record = session.start_run("train")
        session.writer.enqueue(record.handle, Metric("loss", float(rank), 0, TS))
        session.end_run(record, "FINISHED")
        assert session.close(30) == 0
    _drained(receiver)
    (run,) = _client_runs(mlflow_client, job)
    assert run.data.tags["trackbridge.client_id"] == "trainer-rank0"
    assert all_points(mlflow_client, run) == {"loss": [("loss", 0.0, 0, TS)]}


# -- NVFlare --------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_nvflare_writer_logs_a_run_per_site(receiver: Any, mlflow_client: Any, job: str) -> None:
    """As NVFlare's MLflowReceiver: one flat run per site, named
    ``{site}-{job_id[:6]}-{job_name}-{run_name}``, tagged job_id and run_name, described."""
    for site in ("site-1", "site-2"):
        with MLflowWriter(
            receiver.address,
            site,
            job,
            run_name="tb-run",
            experiment_name=job,
            tags={"site": site, "mlflow.note.content": "run description"},
            job_id="1796123021",
            job_name="hello-pt",
        ) as writer:
            writer.log_params({"lr": 0.01, "rounds": 2})
            writer.log_param("aggregation", "fedavg")
            for step in range(3):
                writer.log_metric("train_loss", 1.0 / (step + 1), step)
            writer.log_metrics({"val_acc": 0.8, "val_loss": 0.3}, step=2)
            writer.log_text("round summary", "summaries/round-2.txt")
            writer.set_tag("framework", "torch")
            writer.set_tags({"round": 2})
            with pytest.raises(Exception, match="Changing param values is not allowed"):
                writer.log_param("lr", 0.02)
    _drained(receiver)
    runs = {r.info.run_name: r for r in job_runs(mlflow_client, job)}
    assert sorted(runs) == ["site-1-179612-hello-pt-tb-run", "site-2-179612-hello-pt-tb-run"]
    for name, run in runs.items():
        site = name[: len("site-1")]
        assert run.info.status == "FINISHED"
        assert "mlflow.parentRunId" not in run.data.tags  # flat, as NVFlare's
        assert run.data.tags["mlflow.note.content"] == "run description"
        assert run.data.params == {"lr": "0.01", "rounds": "2", "aggregation": "fedavg"}
        assert user_tags(run) == {
            "site": site,
            "framework": "torch",
            "round": "2",
            "job_id": "1796123021",
            "run_name": name,
        }
        points = all_points(mlflow_client, run)
        assert sorted((p[2], p[1]) for p in points["train_loss"]) == [
            (0, 1.0),
            (1, 0.5),
            (2, 1 / 3),
        ]
        assert points["val_acc"][0][1:3] == (0.8, 2)
        wait_until(
            lambda run_id=run.info.run_id: (
                [a.path for a in mlflow_client.list_artifacts(run_id, "summaries")]
                == ["summaries/round-2.txt"]
            ),
            30,
            what="the site's text artifact",
        )


NVFLARE_SITE = """
import os, sys, time
from client_sdk.integrations.nvflare import MLflowWriter

writer = MLflowWriter(experiment_name=sys.argv[1])  # a learner never closes its writer
writer.log_metric("train_loss", 0.5, 0)
assert writer.flush(30)
print("logged", flush=True)
if sys.argv[2] == "die":
    time.sleep(120)  # killed by the test
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_nvflare_site_runs_end_with_the_job(
    start_receiver: Any, mlflow_client: Any, job: str, tmp_path: Any
) -> None:
    """A site's run ends FINISHED when its process ends (nothing closes the writer), and
    KILLED by the receiver's run lease when the process dies."""
    receiver = start_receiver(extra_args=("--run-lease", "3"))
    procs = {}
    for site, how in (("site-1", "exit"), ("site-2", "die")):
        env = base_env(
            TRACKBRIDGE_RECEIVER=receiver.address,
            TRACKBRIDGE_CLIENT_ID=site,
            TRACKBRIDGE_JOB=job,
            TRACKBRIDGE_SPOOL_DIR=str(tmp_path / site),
        )
        procs[site] = subprocess.Popen(
            [sys.executable, "-c", NVFLARE_SITE, job, how],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
    try:
        assert procs["site-1"].wait(60) == 0
        assert procs["site-2"].stdout is not None
        assert procs["site-2"].stdout.readline().strip() == "logged"
        procs["site-2"].send_signal(signal.SIGKILL)
        procs["site-2"].wait(30)

        def ended() -> dict[str, str] | None:
            found = {r.info.run_name[:6]: r.info.status for r in job_runs(mlflow_client, job)}
            return found if len(found) == 2 and "RUNNING" not in found.values() else None

        assert wait_until(ended, 90, interval_s=0.5, what="both site runs to end") == {
            "site-1": "FINISHED",
            "site-2": "KILLED",
        }
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.mark.timeout(180)
def test_nvflare_writer_lands_where_nvflares_receiver_would_with_the_jobs_kw_args(
    receiver: Any, mlflow_client: Any, job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NVFlare's hello-pt-mlflow configures its MLflowReceiver with kw_args (experiment_name,
    run_name, run_tags); the writer given the same dict names the experiment, the runs and
    their tags as NVFlare's own receiver does (its code computes what is expected here); with
    no kw_args, ``MLFLOW_EXPERIMENT_NAME`` names the experiment."""
    from nvflare.app_opt.tracking.mlflow.mlflow_receiver import MLflowReceiver

    kw_args = {
        "experiment_name": f"{job}-nvflare-fedavg-experiment",
        "run_name": "nvflare-fedavg-with-mlflow",
        "experiment_tags": {"mlflow.note.content": "## NVFlare FedAvg experiment"},
        "run_tags": {"mlflow.note.content": "## Federated experiment tracking"},
    }
    nvflare = MLflowReceiver(kw_args=kw_args)
    expected = {}
    for site in ("site-1", "site-2"):
        with MLflowWriter(
            receiver.address, site, job, kw_args=kw_args, job_id="1796123021", job_name="hello-pt"
        ) as writer:
            writer.log_metric("train_loss", 0.5, 0)
        mine = copy.deepcopy(kw_args)  # NVFlare's receiver adds to the dict it is given
        name = nvflare._get_run_name(mine, site, "1796123021", "hello-pt")
        tags = nvflare._get_run_tags(mine, "1796123021", name)
        expected[name] = tags
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", f"{job}-from-env")
    with MLflowWriter(receiver.address, "site-3", job) as writer:
        writer.log_metric("train_loss", 0.5, 0)
    _drained(receiver)
    runs = {r.info.run_name: r for r in job_runs(mlflow_client, f"{job}-nvflare-fedavg-experiment")}
    assert sorted(runs) == sorted(expected)
    for name, run in runs.items():
        assert {k: run.data.tags[k] for k in expected[name]} == expected[name]
    (env_run,) = job_runs(mlflow_client, f"{job}-from-env")
    assert env_run.info.run_name.startswith("site-3-")
