"""The experiment a script chose survives receiver crashes: ``kill -9`` of the receiver three
times while four clients stream, each followed by a restart on the same data directory while
the scripts go on, in both client modes; every run ends up, whole and once, in the experiment
its script chose. A kill at every MLflow call of a run's start-up:
tests/faults/test_experiment_startup.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.compat import base_env, receiver_idle
from tests.support.faults import TcpProxy, acked_events
from tests.support.procs import CLIENTS_DIR, ReceiverProcess, wait_until

pytestmark = pytest.mark.slow

STREAM_SCRIPT = CLIENTS_DIR / "experiment_stream.py"
STREAM_POINTS = 3_000
"""Per client: the three kills come after about 200, 700 and 1,200 of the 12,000 points are
stored (each after 500 more), so each still falls mid-stream, well before the end."""


@pytest.mark.timeout(900)
def test_runs_stay_in_their_experiments_when_the_receiver_is_killed_mid_stream(
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_client: Any,
    job: str,
    proxy: TcpProxy,
    tmp_path: Path,
) -> None:
    """Issue 23's shape: four clients (two zero-code, two import swap), each in an experiment
    of its own, stream points while the receiver gets ``kill -9`` three times, each
    followed by a restart on the same data directory. Every run ends up whole, FINISHED, in
    the experiment its script chose, and the job's experiment holds no client run."""
    data_dir = tmp_path / "receiver-data"
    receiver = start_receiver(data_dir=data_dir)
    proxy.set_upstream(receiver.port)
    go = tmp_path / "go"
    clients = {}
    for i, mode in enumerate(("zero", "swap", "zero", "swap")):
        client_id = f"streamer-{i}-{mode}"
        env = base_env(
            TRACKBRIDGE_CLIENT_ID=client_id,
            TRACKBRIDGE_JOB=job,
            TRACKBRIDGE_SPOOL_DIR=str(tmp_path / "spool" / client_id),
            XDG_CACHE_HOME=str(tmp_path / "cache"),
        )
        argv = [sys.executable, str(STREAM_SCRIPT), f"{job}-{client_id}", str(STREAM_POINTS)]
        argv += ["--run-name", client_id, "--wait-file", str(go)]
        if mode == "swap":
            env["TRACKBRIDGE_RECEIVER"] = proxy.address
            argv.append("--swap")
        else:
            env["MLFLOW_TRACKING_URI"] = f"trackbridge://{proxy.address}"
        with (tmp_path / f"{client_id}.log").open("wb") as log:
            clients[client_id] = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT
            )
    try:
        wait_until(lambda: acked_events(data_dir) > 200, 240, what="the clients to stream")
        for _ in range(3):  # the issue saw it after three kills, 3 s apart
            receiver.proc.kill()  # kill -9
            receiver.returncode = receiver.proc.wait(timeout=30)
            receiver = start_receiver(data_dir=data_dir)
            proxy.set_upstream(receiver.port)
            before = acked_events(data_dir)  # the next kill once the clients stream again
            target = min(before + 500, len(clients) * STREAM_POINTS)
            wait_until(lambda t=target: acked_events(data_dir) >= t, 240, what="progress")
        go.touch()
        for client_id, proc in clients.items():
            assert proc.wait(timeout=300) == 0, (tmp_path / f"{client_id}.log").read_text()
    finally:
        for proc in clients.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    wait_until(lambda: receiver_idle(data_dir), 240, what="the receiver to write everything")

    experiments = {e.experiment_id: e.name for e in mlflow_client.search_experiments()}
    runs = mlflow_client.search_runs(
        list(experiments),
        f"tags.`trackbridge.job` = '{job}' and tags.`trackbridge.role` = 'client'",
    )
    where = sorted(
        (r.data.tags["trackbridge.client_id"], experiments[r.info.experiment_id]) for r in runs
    )
    assert where == sorted((cid, f"{job}-{cid}") for cid in clients)
    for run in runs:
        history = mlflow_client.get_metric_history(run.info.run_id, "x")
        assert sorted(int(m.value) for m in history) == list(range(STREAM_POINTS)), run.info
        assert run.info.status == "FINISHED", run.info
