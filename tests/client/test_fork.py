"""Forking while the client's gRPC calls are in flight (client_sdk/_fork_gate.py).

gRPC skips its fork handlers when a thread is inside one of its calls, and a child that then
opens a channel can abort (SIGABRT in ev_epoll1_linux.cc). The gate makes a fork wait for short
calls and keeps a child forked during a long one off gRPC. Real forks, real receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.faults import queue_drained
from tests.support.mlflow_reads import TAG_CLIENT_ID, child_runs, job_runs
from tests.support.procs import ReceiverProcess, wait_until

# The forks happen in a fresh interpreter: forking pytest itself, which holds other tests'
# gRPC channels, is the very hazard under test.
GATE = """
import json, os, sys, threading, time
from client_sdk._fork_gate import clean_fork, grpc_call
from client_sdk._transport import Transport, TransportError
def child_publish():
    try:
        Transport("127.0.0.1:1", 1.0).publish(b"")
    except TransportError as exc:
        return f"{exc.code} retryable={exc.retryable}"
    return "sent"

long = sys.argv[1] == "long"
inside, ended, release = threading.Event(), threading.Event(), threading.Event()
def call():
    with grpc_call(long=long):
        inside.set()
        release.wait(0.5)
    ended.set()
thread = threading.Thread(target=call)
thread.start()
inside.wait(5)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    report = {"clean": clean_fork(), "publish": "" if clean_fork() else child_publish()}
    os.write(write, json.dumps(report).encode())
    os._exit(0)
ended_at_fork = ended.is_set()
os.close(write)
child = json.loads(os.read(read, 4096))
_, status = os.waitpid(pid, 0)
release.set()
thread.join(5)
print(json.dumps({"ended_at_fork": ended_at_fork, "child": child, "status": status}))
"""


def _fork_with_call_in_flight(*, long: bool) -> dict[str, Any]:
    """Forks while another thread is inside a gated call for 0.5 s; what parent and child saw."""
    done = subprocess.run(
        [sys.executable, "-c", GATE, "long" if long else "short"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert report["status"] == 0
    return report


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_fork_waits_for_a_short_call_and_the_child_may_use_grpc() -> None:
    report = _fork_with_call_in_flight(long=False)
    assert report["ended_at_fork"]
    assert report["child"] == {"clean": True, "publish": ""}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_fork_during_a_long_call_does_not_wait_and_the_child_keeps_off_grpc() -> None:
    report = _fork_with_call_in_flight(long=True)
    assert not report["ended_at_fork"]
    # No channel in that child: its sends fail as if the receiver were down, and are retried.
    assert report["child"] == {"clean": False, "publish": "UNAVAILABLE retryable=True"}


STRESS = """
import os, sys, threading, time
from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
address, job, forks = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Batches of 4 at about 2k points/s: the parent's sender is inside a Publish most of the time,
# and what it logs stays small enough for MLflow to take in quickly on a loaded machine.
parent = Writer(config=WriterConfig(address, "parent", job, max_batch_events=4))
parent.start_run()
stop = False
def pump():
    i = 0
    while not stop:
        parent.log_metric("p", float(i), step=i)
        i += 1
        if i % 2 == 0:
            time.sleep(0.001)
threading.Thread(target=pump, daemon=True).start()
failed = []
for k in range(forks):
    pid = os.fork()
    if pid == 0:
        child = Writer(address, f"child-{k}", job)
        child.start_run()
        child.log_metric("x", 1.0, step=0)
        child.end_run("FINISHED")
        os._exit(0 if child.close(timeout_s=20) == 0 else 3)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append((k, os.waitstatus_to_exitcode(status)))
stop = True
parent.end_run("FINISHED")
print("failed children:", failed, "parent undelivered:", parent.close(timeout_s=60))
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_children_forked_while_the_parent_streams_all_deliver(
    tmp_path: Path, receiver: ReceiverProcess, mlflow_client: Any, job: str
) -> None:
    forks = 150
    script = tmp_path / "stress.py"
    script.write_text(STRESS)
    result = subprocess.run(
        [sys.executable, str(script), receiver.address, job, str(forks)],
        capture_output=True, text=True, timeout=200, check=False,
        env=dict(os.environ, TRACKBRIDGE_SPOOL_DIR=str(tmp_path / "spool")),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "parent undelivered: 0" in result.stdout
    # Every child and the parent closed with nothing undelivered, so the receiver holds all of
    # it: once its queue is empty, everything is in MLflow (a batch leaves it once written).
    try:
        wait_until(lambda: queue_drained(receiver.data_dir), 300, what="the receiver's queue empty")
    except AssertionError as exc:
        status = subprocess.run(
            [sys.executable, "-m", "server.cli.main", "status", "--data-dir",
             str(receiver.data_dir)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        raise AssertionError(f"{exc}\n{status.stdout[-4000:]}\n{receiver.log_tail()}") from None
    assert len(child_runs(job_runs(mlflow_client, job))) == forks + 1
    for run in child_runs(job_runs(mlflow_client, job)):
        if run.data.tags[TAG_CLIENT_ID].startswith("child-"):
            assert run.data.metrics == {"x": 1.0}, run.data
