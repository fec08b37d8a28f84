"""The experiment a script chose survives receiver crashes: ``kill -9`` of the receiver before
``set_experiment``, between it and ``start_run``, and right after ``start_run`` (its start in
flight), each followed by a restart on the same data directory while the script goes on, in
both client modes; every run ends up, whole and once, in the experiment its script chose."""

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

SCRIPT = CLIENTS_DIR / "experiment_choice.py"
CASES = ("kill-before-set", "kill-before-start", "kill-after-start")
POINTS = 200
ACTIONS = {
    "kill-before-set.set": "kill",  # set_experiment while the receiver is down
    "kill-before-set.start": "restart",
    "kill-before-start.start": "kill",  # start_run while it is down
    "kill-before-start.points": "restart",
    "kill-after-start.points": "kill and restart",  # the start just sent, maybe half-written
}
STEPS = [f"{case}.{step}" for case in CASES for step in ("set", "start", "points")]


def start_client(mode: str, proxy: TcpProxy, job: str, tmp: Path) -> tuple[Any, Path, str]:
    client_id = f"chooser-{mode}"
    steps = tmp / f"steps-{mode}"
    steps.mkdir()
    env = base_env(
        TRACKBRIDGE_CLIENT_ID=client_id,
        TRACKBRIDGE_JOB=job,
        TRACKBRIDGE_SPOOL_DIR=str(tmp / "spool" / mode),
        XDG_CACHE_HOME=str(tmp / "cache"),
    )
    argv = [sys.executable, str(SCRIPT), str(steps), f"{job}-{mode}"]
    if mode == "swap":
        env["TRACKBRIDGE_RECEIVER"] = proxy.address
        argv.append("--swap")
    else:
        env["MLFLOW_TRACKING_URI"] = f"trackbridge://{proxy.address}"
    with (tmp / f"client-{mode}.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, steps, client_id


@pytest.mark.timeout(900)
def test_a_run_lands_in_the_experiment_its_script_chose_across_kill_9(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "receiver-data"
    receiver = start_receiver(data_dir=data_dir, flush_interval_s=0.2)
    proxy = TcpProxy(receiver.port)
    clients = [start_client(mode, proxy, job, tmp_path) for mode in ("zero", "swap")]
    try:
        for name in STEPS:
            for proc, steps, _ in clients:
                reached = steps / f"{name}.reached"
                wait_until(
                    lambda r=reached, p=proc: r.exists() or p.poll() is not None,
                    240,
                    what=f"step {name}",
                )
                assert proc.poll() is None, (tmp_path / "client-zero.log").read_text()
            action = ACTIONS.get(name, "")
            if "kill" in action:
                receiver.proc.kill()  # kill -9
                receiver.returncode = receiver.proc.wait(timeout=30)
            if "restart" in action:
                receiver = start_receiver(data_dir=data_dir, flush_interval_s=0.2)
                proxy.set_upstream(receiver.port)
            for _, steps, _ in clients:
                (steps / f"{name}.go").touch()
        for proc, _, _ in clients:
            assert proc.wait(timeout=300) == 0, [
                (tmp_path / f"client-{m}.log").read_text() for m in ("zero", "swap")
            ]
    finally:
        for proc, _, _ in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        proxy.close()
    wait_until(lambda: receiver_idle(data_dir), 180, what="the receiver to write everything")

    for mode, client_id in (("zero", "chooser-zero"), ("swap", "chooser-swap")):
        experiments = mlflow_client.search_experiments()
        for case in CASES:
            chosen = f"{job}-{mode}-{case}"
            found = mlflow_client.search_runs(
                [e.experiment_id for e in experiments],
                f"tags.`trackbridge.client_id` = '{client_id}' and attributes.run_name = '{case}'",
            )
            where = {mlflow_client.get_experiment(r.info.experiment_id).name for r in found}
            assert where == {chosen}, f"{mode} {case}: runs in {where}, chosen {chosen}"
            assert len(found) == 1, f"{mode} {case}: {len(found)} runs"
            (run,) = found
            history = mlflow_client.get_metric_history(run.info.run_id, "x")
            assert sorted(int(m.value) for m in history) == list(range(POINTS)), (mode, case)
            assert run.info.status == "FINISHED", (mode, case)


STREAM_SCRIPT = CLIENTS_DIR / "experiment_stream.py"
STREAM_POINTS = 10_000


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
