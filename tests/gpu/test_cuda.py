"""On a CUDA GPU: a tensor on the device logged as a metric (read on the sender thread, never
in the loop) and GPU system metrics, through a real receiver into a real MLflow server.
Elsewhere these are skipped, saying why; CI never depends on them."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import pytest
import torch

from client_sdk._values import DeviceScalar
from client_sdk.config import WriterConfig
from client_sdk.system_metrics import probe
from client_sdk.writer import Writer
from tests.support.mlflow_reads import metric_points, wait_for_children
from tests.support.procs import ReceiverProcess

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")


def test_cuda_tensor_is_read_on_the_sender_thread(
    receiver: ReceiverProcess, mlflow_client: Any, job: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers: list[str] = []
    real_float = DeviceScalar.__float__

    def recording_float(self: DeviceScalar) -> float:
        readers.append(threading.current_thread().name)
        return real_float(self)

    monkeypatch.setattr(DeviceScalar, "__float__", recording_float)
    writer = Writer(receiver=receiver.address, client_id="gpu-site", job=job)
    writer.start_run()
    value = torch.tensor(1.5, device="cuda")
    writer.log_metric("x", value, step=0)
    value.add_(1.0)  # a later in-place update must not change what was logged
    writer.log_metric("x", torch.ones(1, device="cuda") * 4, step=1)
    assert readers == []  # nothing read in the loop
    assert writer.close(timeout_s=30) == 0
    assert readers and threading.main_thread().name not in readers
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert [(p[1], p[2]) for p in metric_points(mlflow_client, run.info.run_id, "x")] == [
        (1.5, 0),
        (4.0, 1),
    ]


def test_gpu_system_metrics_are_sampled() -> None:
    host = probe()
    assert host is not None and host.has_gpus, "CUDA is available but NVML finds no GPU"
    sample = host.sample()
    assert 0.0 <= sample["system/gpu_0_utilization_percentage"] <= 100.0
    assert 0.0 <= sample["system/gpu_0_memory_usage_percentage"] <= 100.0
    assert sample["system/gpu_0_memory_usage_megabytes"] >= 0.0
    if "system/gpu_0_power_usage_watts" in sample:  # not every GPU reports power
        assert sample["system/gpu_0_power_usage_watts"] > 0.0
        assert 0.0 < sample["system/gpu_0_power_usage_percentage"] <= 150.0


def test_gpu_system_metrics_land_per_client(
    receiver: ReceiverProcess, mlflow_client: Any, job: str
) -> None:
    config = replace(
        WriterConfig.resolve(receiver.address, "gpu-site", job),
        system_metrics=True,
        system_metrics_interval_s=0.2,
    )
    writer = Writer(config=config)
    writer.start_run()
    sampler = writer._system
    assert sampler is not None
    x = torch.randn(512, 512, device="cuda")
    deadline = time.monotonic() + 60
    while sampler.samples < 3 and time.monotonic() < deadline:  # the GPU busy meanwhile
        x = (x @ x).tanh()
        torch.cuda.synchronize()
    writer.close(timeout_s=30)
    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    points = metric_points(mlflow_client, run.info.run_id, "system/gpu_0_memory_usage_megabytes")
    assert len(points) >= 3 and all(p[1] > 0 for p in points)
