"""The system metrics sampler's own logic: its switches, its names, its thread's lifetime."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Mapping

import pytest

from client_sdk.config import WriterConfig, env_flag
from client_sdk.system_metrics import PREFIX, Sampler, probe
from tests.support.procs import wait_until

HOST_NAMES = {
    PREFIX + name
    for name in (
        "cpu_utilization_percentage",
        "system_memory_usage_megabytes",
        "system_memory_usage_percentage",
        "disk_usage_percentage",
        "disk_usage_megabytes",
        "disk_available_megabytes",
        "network_receive_megabytes",
        "network_transmit_megabytes",
    )
}


@pytest.mark.parametrize(("raw", "on"), [("1", True), ("true", True), ("ON", True),
                                         ("0", False), ("", False), ("no", False)])  # fmt: skip
def test_the_environment_switch(raw: str, on: bool) -> None:
    assert env_flag({"X": raw}, "X") is on
    config = WriterConfig.resolve("127.0.0.1:1", "c", "j", env={"TRACKBRIDGE_SYSTEM_METRICS": raw})
    assert config.system_metrics is on


def test_a_bad_switch_or_interval_names_the_variable() -> None:
    with pytest.raises(ValueError, match="TRACKBRIDGE_SYSTEM_METRICS must be 1 or 0"):
        WriterConfig.resolve("127.0.0.1:1", "c", "j", env={"TRACKBRIDGE_SYSTEM_METRICS": "maybe"})
    with pytest.raises(ValueError, match="TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S must be a number"):
        WriterConfig.resolve(
            "127.0.0.1:1", "c", "j", env={"TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S": "ten"}
        )
    with pytest.raises(ValueError, match="system_metrics_interval_s must be positive"):
        WriterConfig.resolve(
            "127.0.0.1:1", "c", "j", env={"TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S": "0"}
        )
    env = {"TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S": "2.5"}
    assert WriterConfig.resolve("127.0.0.1:1", "c", "j", env=env).system_metrics_interval_s == 2.5


def test_a_sample_has_mlflows_names_and_leaves_psutils_own_state_alone() -> None:
    import psutil

    host = probe()
    assert host is not None
    psutil.cpu_percent()  # the user's own "since the last call" reference
    before = psutil._last_cpu_times  # type: ignore[attr-defined]
    sample = host.sample()
    assert psutil._last_cpu_times is before  # type: ignore[attr-defined]
    assert set(sample) >= HOST_NAMES
    assert set(sample) - HOST_NAMES == {k for k in sample if k.startswith(PREFIX + "gpu_")}
    assert all(isinstance(v, float) and v >= 0 for v in sample.values())


def test_the_thread_stops_when_told_or_when_emit_says_so() -> None:
    host = probe()
    assert host is not None
    got: list[Mapping[str, float]] = []
    sampler = Sampler(host, lambda s: bool(got.append(s)) or len(got) < 2, 0.01).start()
    wait_until(lambda: not sampler.running and len(got) == 2, 30, what="two samples, then stop")
    sampler = Sampler(host, lambda s: True, 0.01).start()
    sampler.stop()
    assert not any(t.name == "trackbridge-system-metrics" for t in threading.enumerate())
    with pytest.raises(ValueError, match="interval_s must be positive"):
        Sampler(host, lambda s: True, 0)


FORK_CHILD = """
import os, sys, threading
from client_sdk.writer import Writer
w = Writer(receiver="127.0.0.1:1", client_id="c", job="j", system_metrics=True)
assert w._system is not None and w._system.running
pid = os.fork()
if pid == 0:
    names = [t.name for t in threading.enumerate()]
    ok = w._system is None and "trackbridge-system-metrics" not in names
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
w.close(timeout_s=1)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.slow
def test_a_forked_child_has_no_sampler() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FORK_CHILD],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"TRACKBRIDGE_SPOOL_DIR": "", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
