"""System metrics per client, for real: client processes sample their host and log through a
receiver into a real MLflow server, under MLflow's own names (``client_sdk/system_metrics.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from client_sdk.system_metrics import INSTALL_HINT
from tests.support.mlflow_reads import children_by_client, metric_points, wait_for_children
from tests.support.procs import CLIENTS_DIR, ReceiverProcess, child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SCRIPT = CLIENTS_DIR / "system_client.py"

# MLflow 3.17's names (mlflow/system_metrics/metrics/{cpu,disk,network}_monitor.py), with
# the range each value must lie in on any host.
HOST_METRICS = {
    "system/cpu_utilization_percentage": (0.0, 100.0),
    "system/system_memory_usage_megabytes": (1.0, 1e9),
    "system/system_memory_usage_percentage": (0.0, 100.0),
    "system/disk_usage_percentage": (0.0, 100.0),
    "system/disk_usage_megabytes": (0.0, 1e12),
    "system/disk_available_megabytes": (0.0, 1e12),
    "system/network_receive_megabytes": (0.0, 1e9),
    "system/network_transmit_megabytes": (0.0, 1e9),
}


def _run_client(
    receiver: ReceiverProcess, job: str, client_id: str, *args: str, **env: str
) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=child_env(
            TRACKBRIDGE_RECEIVER=receiver.address,
            TRACKBRIDGE_CLIENT_ID=client_id,
            TRACKBRIDGE_JOB=job,
            TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S="0.2",
            MLFLOW_TRACKING_URI=f"trackbridge://{receiver.address}",
            MLFLOW_EXPERIMENT_NAME=job,
            **env,
        ),
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _check_host_metrics(client: Any, run: Any) -> int:
    """Every host metric is there with a plausible value at steps 0..n-1; returns n."""
    counts = set()
    for key, (low, high) in HOST_METRICS.items():
        points = sorted(metric_points(client, run.info.run_id, key), key=lambda p: p[2])
        assert points, f"{key} missing; run has {sorted(run.data.metrics)}"
        assert [p[2] for p in points] == list(range(len(points))), key
        for _, value, _, _ in points:
            assert low <= value <= high, (key, value)
        counts.add(len(points))
    assert len(counts) == 1, counts  # one log_metrics per sample: every key at every step
    return counts.pop()


def test_writer_and_env_switch_log_host_metrics_per_client(
    receiver: ReceiverProcess, mlflow_client: Any, job: str
) -> None:
    reports = {
        "site-a": _run_client(receiver, job, "site-a", "--mode", "writer")[0],
        "site-b": _run_client(
            receiver, job, "site-b", "--mode", "env", TRACKBRIDGE_SYSTEM_METRICS="1"
        )[0],
    }
    wait_for_children(mlflow_client, job, 2, timeout_s=60)
    runs = children_by_client(mlflow_client, job)
    assert set(runs) == {"site-a", "site-b"}
    for client_id, run in runs.items():
        report = reports[client_id]
        assert report["threads_after_close"] == 0  # stopped with the writer
        assert _check_host_metrics(mlflow_client, run) == report["samples"] >= 3
        losses = metric_points(mlflow_client, run.info.run_id, "loss")
        assert len(losses) == report["steps"]  # the training metrics are untouched
        # No GPU here, or pynvml missing: no GPU key at all (never a made-up value).
        assert not [k for k in run.data.metrics if k.startswith("system/gpu_")] or _has_gpu()


def test_light_client_enable_system_metrics_logging(
    receiver: ReceiverProcess, mlflow_client: Any, job: str
) -> None:
    report, _ = _run_client(receiver, job, "site-light", "--mode", "light")
    assert report["threads_after_end"] == 0  # the run's end stopped its sampler
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert _check_host_metrics(mlflow_client, run) >= 3


def test_full_mode_runs_mlflows_own_monitor_through_the_receiver(
    receiver: ReceiverProcess, mlflow_client: Any, job: str
) -> None:
    report, _ = _run_client(receiver, job, "site-full", "--mode", "full")
    assert report["threads_after_end"] == 0
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert _check_host_metrics(mlflow_client, run) >= 3


@pytest.mark.parametrize("mode", ["writer", "light"])
def test_without_psutil_one_warning_and_logging_goes_on(
    receiver: ReceiverProcess, mlflow_client: Any, job: str, mode: str
) -> None:
    report, stderr = _run_client(receiver, job, "site-bare", "--mode", mode, "--block-psutil")
    assert stderr.count(INSTALL_HINT) == 1, stderr
    assert "Traceback" not in stderr
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert not [k for k in run.data.metrics if k.startswith("system/")]
    assert len(metric_points(mlflow_client, run.info.run_id, "loss")) == report["steps"] >= 1


def _has_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return bool(pynvml.nvmlDeviceGetCount())
    except Exception:
        return False
