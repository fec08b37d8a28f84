"""The experiment a script chose survives a receiver killed inside a run's start-up (issue 23):
``kill -9`` around the creation of the experiment and of each run (before the call, and after
it with the answer lost), each followed by a restart on the same data directory
while the script goes on, in both client modes; every run ends up, whole and once, in the
experiment its script chose."""

from __future__ import annotations

import functools
import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, RunEnd, RunStatus
from client_sdk._transport import Transport
from tests.support.compat import base_env, receiver_idle
from tests.support.dying_receiver import DIE_FILE_ENV
from tests.support.faults import TcpProxy
from tests.support.procs import CLIENTS_DIR, REPO_ROOT, ReceiverProcess, start_ready, wait_until

pytestmark = pytest.mark.slow

STARTUP_SCRIPT = CLIENTS_DIR / "experiment_startup.py"
STARTUP_POINTS = 20
OVER = r"/runs/log-batch$"
"""The run's first points: its start-up is over."""
EXPERIMENT_CREATE = r"/experiments/create$"
RUN_CREATE = r"/runs/create$"
# (case, the calls counted, kill at the k-th of them, after MLflow answered): the points where
# a kill can cost a run its chosen experiment: around the experiment's creation and around each
# run's creation (the job's parent, then the client's run). A kill at every other call of the
# start-up, in every order, is tests/faults/test_start_up_kill_points.py's, in process.
POINTS = {
    # zero-code: set_experiment's calls go through the receiver too
    "zero": (
        ("experiment-before", EXPERIMENT_CREATE, 1, False),
        ("experiment-after", EXPERIMENT_CREATE, 1, True),
        ("run-1-before", RUN_CREATE, 1, False),
        ("run-1-after", RUN_CREATE, 1, True),
        ("run-2-before", RUN_CREATE, 2, False),
        ("run-2-after", RUN_CREATE, 2, True),
    ),
    # import swap: the start-up is the receiver's creation calls
    "swap": (
        ("experiment-after", EXPERIMENT_CREATE, 1, True),
        ("run-1-before", RUN_CREATE, 1, False),
        ("run-1-after", RUN_CREATE, 1, True),
        ("run-2-after", RUN_CREATE, 2, True),
    ),
}


class DyingReceiver:
    """``trackbridge serve`` under tests/support/dying_receiver.py, restartable on one data
    directory behind one TCP proxy (the clients' address)."""

    def __init__(self, tmp: Path, tracking_uri: str) -> None:
        self.tmp = tmp
        self.tracking_uri = tracking_uri
        self.data_dir = tmp / "receiver-data"
        self.plan = tmp / "die.json"
        self.lives = 0
        self.receiver = self._start()
        self.proxy = TcpProxy(self.receiver.port)

    def _start(self) -> ReceiverProcess:
        self.lives += 1
        ready = self.tmp / f"ready-{self.lives}.json"
        cmd = [
            sys.executable, "-m", "tests.support.dying_receiver", "serve",
            "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir),
            "--tracking-uri", self.tracking_uri, "--flush-interval", "0.2",
            "--ready-file", str(ready),
        ]  # fmt: skip
        env = {DIE_FILE_ENV: str(self.plan), "PYTHONPATH": str(REPO_ROOT)}
        log = self.tmp / f"receiver-{self.lives}.log"
        return start_ready(cmd, ready, log, self.data_dir, self.tracking_uri, env=env)

    def arm(self, nonce: str, call: int, *, after: bool, match: str) -> None:
        """The receiver dies at its ``call``-th MLflow call matching ``match`` from now
        (before it, or after), unless the run's start-up is over first."""
        plan = {"nonce": nonce, "call": call, "after": after, "match": match, "until": OVER}
        part = self.plan.with_suffix(".part")
        part.write_text(json.dumps(plan))
        part.replace(self.plan)

    def restart_if_dead(self) -> bool:
        """Starts it again (disarmed) when it died; True when it had."""
        if self.receiver.proc.poll() is None:
            return False
        self.receiver.returncode = self.receiver.proc.wait(timeout=30)
        assert self.receiver.returncode == -signal.SIGKILL, self.receiver.log_tail()
        self.plan.unlink()
        self.receiver = self._start()
        self.proxy.set_upstream(self.receiver.port)
        return True

    def killed_at(self, nonce: str, call: int) -> str:
        """The MLflow call it died at (``METHOD endpoint``)."""
        calls = self.plan.with_name(self.plan.name + ".calls").read_text().splitlines()
        (line,) = [c for c in calls if c.split()[:2] == [nonce, str(call)]]
        return " ".join(line.split()[2:])

    def calls(self) -> str:
        """Every counted call (``nonce index METHOD endpoint``), for a failure's message."""
        return self.plan.with_name(self.plan.name + ".calls").read_text()

    def close(self) -> None:
        self.proxy.close()
        if self.receiver.proc.poll() is None:
            self.plan.unlink(missing_ok=True)
            assert self.receiver.stop() == 0, self.receiver.log_tail()


def _whole(client: Any, job: str, case: str) -> bool:
    """Whether the case's run is in MLflow with all its points, FINISHED."""
    experiment = client.get_experiment_by_name(f"{job}-{case}")
    if experiment is None:
        return False
    runs = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{case}'")
    return any(
        r.info.status == "FINISHED" and len(client.get_metric_history(r.info.run_id, "x"))
        == STARTUP_POINTS for r in runs
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["zero", "swap"])
@pytest.mark.timeout(900)
def test_a_kill_around_each_creation_of_a_runs_start_up_keeps_the_chosen_experiment(
    mode: str, mlflow_server: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    """The receiver dies (SIGKILL) inside a run's start-up, counted from the script's
    ``set_experiment``: before and after (MLflow applied it, the answer lost) the experiment's
    creation and each run's creation (POINTS), one case each. Restarted on the same data
    directory each time while the script goes on. Every run is once, whole, FINISHED, in the
    experiment its script chose. Deterministic: the kill is at a named call
    (tests/support/dying_receiver.py), every wait is on a condition."""
    dying = DyingReceiver(tmp_path, mlflow_server.uri)
    steps = tmp_path / "steps"
    steps.mkdir()
    client_id = f"starter-{mode}"
    env = base_env(
        TRACKBRIDGE_CLIENT_ID=client_id,
        TRACKBRIDGE_JOB=job,
        TRACKBRIDGE_SPOOL_DIR=str(tmp_path / "spool"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )
    argv = [sys.executable, str(STARTUP_SCRIPT), str(steps), job]
    if mode == "swap":
        env["TRACKBRIDGE_RECEIVER"] = dying.proxy.address
        argv.append("--swap")
    else:
        env["MLFLOW_TRACKING_URI"] = f"trackbridge://{dying.proxy.address}"
    log_path = tmp_path / "client.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    killed: dict[str, str] = {}  # case -> the MLflow call the receiver died at
    performed: list[str] = []
    try:
        for case, match, call, after in POINTS[mode]:
            index = len(performed)
            nonce = str(index)
            performed.append(case)
            if index:  # the case before is whole in MLflow: nothing of it is still to come
                whole = functools.partial(_whole, mlflow_client, job, performed[-2])
                wait_until(whole, 240, what=f"case {performed[-2]} in MLflow")
            dying.arm(nonce, call, after=after, match=match)
            go = steps / f"{index}.part"
            go.write_text(case)
            go.replace(steps / f"{index}.go")
            done = steps / f"{index}.done"

            def settled(done: Path = done) -> bool:
                if proc.poll() is not None or dying.receiver.proc.poll() is not None:
                    return True  # the script failed, or the receiver was killed
                return done.exists() and receiver_idle(dying.data_dir)

            wait_until(settled, 240, what=f"case {case}")
            assert proc.poll() is None, log_path.read_text()
            if dying.restart_if_dead():
                killed[case] = dying.killed_at(nonce, call)
            wait_until(done.exists, 240, what=f"case {case} to finish")
        (steps / "end").touch()
        assert proc.wait(timeout=120) == 0, log_path.read_text()
        wait_until(lambda: receiver_idle(dying.data_dir), 120, what="the last writes")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        dying.close()

    print(f"{mode}: killed at", json.dumps(killed, indent=1))
    # Every planned kill landed, on the call it names (a test that cannot fail is none).
    assert sorted(killed) == sorted(performed), dying.calls()
    for case, match, _call, _after in POINTS[mode]:
        assert re.search(match, killed[case]), (case, dying.calls())
    _check_runs(mlflow_client, job, client_id, performed, killed)


def _check_runs(
    mlflow_client: Any, job: str, client_id: str, performed: list[str], killed: dict[str, str]
) -> None:
    """Each case's run once, whole, FINISHED, in the experiment its script chose."""
    experiments = {e.experiment_id: e.name for e in mlflow_client.search_experiments()}
    runs = mlflow_client.search_runs(
        list(experiments), f"tags.`trackbridge.client_id` = '{client_id}'"
    )
    by_name: dict[str, list[Any]] = {}
    for run in runs:
        by_name.setdefault(run.info.run_name, []).append(run)
    assert sorted(by_name) == sorted(performed)
    for name, found in by_name.items():
        assert len(found) == 1, f"{name}: {len(found)} runs"
        (run,) = found
        assert experiments[run.info.experiment_id] == f"{job}-{name}", (name, killed.get(name))
        history = mlflow_client.get_metric_history(run.info.run_id, "x")
        assert sorted(int(m.value) for m in history) == list(range(STARTUP_POINTS)), name
        assert run.info.status == "FINISHED", name


@pytest.mark.timeout(300)
def test_a_run_whose_start_never_reached_the_receiver_lands_in_the_chosen_experiment(
    start_receiver: Callable[..., ReceiverProcess], mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    """The path issue 23's item 8 needs: a receiver holds a run's later batches but never its
    start (it went to another receiver that stays down, or the client's spool lost it); once
    its run lease has passed it creates the run itself, in the experiment every batch names.
    An older client's batches name none: its run goes to the job's experiment, as before.
    Failed before the batches carried the choice: the run went to the job's experiment."""
    receiver = start_receiver(
        data_dir=tmp_path / "data", flush_interval_s=0.2, extra_args=("--run-lease", "1")
    )
    transport = Transport(receiver.address, timeout_s=30.0)
    try:
        for client_id, chosen in (("site-new", f"{job}-chosen"), ("site-old", "")):
            points = tuple(Metric("x", float(i), i, 1_700_000_000_000 + i) for i in range(5))
            events = (*points, RunEnd(RunStatus.FINISHED, 1_700_000_000_099))
            batch = EventBatch(client_id, job, "run-1", 2, events, experiment=chosen)
            ack = transport.publish(batch_to_proto(batch).SerializeToString())
            assert ack.acked_seq == 7
    finally:
        transport.close()
    wait_until(lambda: receiver_idle(receiver.data_dir), 120, what="the runs to be written")
    experiments = {e.experiment_id: e.name for e in mlflow_client.search_experiments()}
    runs = mlflow_client.search_runs(list(experiments), f"tags.`trackbridge.job` = '{job}'")
    where = {
        r.data.tags["trackbridge.client_id"]: experiments[r.info.experiment_id]
        for r in runs
        if r.data.tags.get("trackbridge.role") == "client"
    }
    assert where == {"site-new": f"{job}-chosen", "site-old": job}
    for run in runs:
        if run.data.tags.get("trackbridge.role") == "client":
            history = mlflow_client.get_metric_history(run.info.run_id, "x")
            assert sorted(int(m.value) for m in history) == list(range(5))
            assert run.info.status == "FINISHED"
