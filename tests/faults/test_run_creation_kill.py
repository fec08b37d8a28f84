"""A receiver started ``--alone`` creates a new run with one ``create_run`` and no look first,
on the strength of the run's "creation attempted" mark in its queue (server/flush/
run_creation.py): killed (``kill -9``) right after the mark, before the call leaves, and
again once MLflow made the run but before its answer came back, then restarted on the same
data directory, it makes each run once, whole. Real receiver, real ``mlflow server``; the kill
is at a named MLflow call (tests/support/dying_receiver.py)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, RunEnd, RunStart, RunStatus
from client_sdk._transport import Transport, TransportError
from tests.support.compat import receiver_idle
from tests.support.dying_receiver import DIE_FILE_ENV
from tests.support.procs import REPO_ROOT, ReceiverProcess, start_ready, wait_until

pytestmark = pytest.mark.slow

POINTS = 10
BASE_TS = 1_700_000_000_000
CREATE = r"/runs/create$"


def _payload(job: str, run_key: str) -> bytes:
    events = (
        RunStart(run_name=run_key, start_time_ms=BASE_TS),
        *(Metric("x", float(i), i, BASE_TS + i) for i in range(POINTS)),
        RunEnd(RunStatus.FINISHED, BASE_TS + 100),
    )
    return batch_to_proto(EventBatch("site", job, run_key, 1, events)).SerializeToString()


def _publish(address: str, payload: bytes) -> None:
    """Sends a run's one batch; a receiver killed before it answered has it already or gets it
    again on the next try (the same sequence numbers: stored once)."""
    transport = Transport(address, timeout_s=30.0)
    try:
        transport.publish(payload)
    except TransportError:
        pass  # killed before it acknowledged: the batch is sent again after the restart
    finally:
        transport.close()


@pytest.mark.timeout(600)
def test_an_alone_receiver_killed_around_a_runs_create_run_makes_the_run_once(
    mlflow_server: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    data_dir, plan = tmp_path / "data", tmp_path / "die.json"
    lives: list[ReceiverProcess] = []

    def start() -> ReceiverProcess:
        ready = tmp_path / f"ready-{len(lives)}.json"
        cmd = [
            sys.executable, "-m", "tests.support.dying_receiver", "serve", "--alone",
            "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
            "--tracking-uri", mlflow_server.uri, "--flush-interval", "0.2",
            "--ready-file", str(ready),
        ]  # fmt: skip
        env = {DIE_FILE_ENV: str(plan), "PYTHONPATH": str(REPO_ROOT)}
        log = tmp_path / f"receiver-{len(lives)}.log"
        lives.append(start_ready(cmd, ready, log, data_dir, mlflow_server.uri, env=env))
        return lives[-1]

    def client_runs() -> dict[str, list[Any]]:
        found = mlflow_client.search_runs(
            [mlflow_client.get_experiment_by_name(job).experiment_id],
            "tags.`trackbridge.role` = 'client'",
        )
        by_key: dict[str, list[Any]] = {}
        for run in found:
            by_key.setdefault(run.data.tags["trackbridge.run_key"], []).append(run)
        return by_key

    receiver = start()
    banner = (tmp_path / "receiver-0.log").read_text()  # printed before the ready file
    assert "new runs: one MLflow call each (--alone" in banner, banner
    try:
        _publish(receiver.address, _payload(job, "warm-up"))  # the job's parent run exists now
        wait_until(lambda: receiver_idle(data_dir), 120, what="the warm-up run")
        for case, after in (("killed-after-the-mark", False), ("answer-lost", True)):
            plan.write_text(json.dumps(
                {"nonce": case, "call": 1, "after": after, "match": CREATE, "until": "^$"}
            ))  # fmt: skip
            _publish(receiver.address, _payload(job, case))
            dying = receiver.proc
            wait_until(lambda p=dying: p.poll() is not None, 120, what=f"the kill ({case})")
            assert dying.wait(timeout=30) == -signal.SIGKILL, receiver.log_tail()
            calls = plan.with_name(plan.name + ".calls").read_text().split("\n")
            assert f"{case} 1 POST /api/2.0/mlflow/runs/create" in calls, calls
            plan.unlink()
            receiver = start()
            _publish(receiver.address, _payload(job, case))
            wait_until(lambda: receiver_idle(data_dir), 120, what=f"the run ({case})")
    finally:
        plan.unlink(missing_ok=True)
        if receiver.proc.poll() is None:
            assert receiver.stop() == 0, receiver.log_tail()

    runs = client_runs()
    assert sorted(runs) == ["answer-lost", "killed-after-the-mark", "warm-up"]
    for key, found in runs.items():
        assert len(found) == 1, f"{key}: {len(found)} runs"
        (run,) = found
        assert run.info.status == "FINISHED"
        history = mlflow_client.get_metric_history(run.info.run_id, "x")
        assert sorted(int(m.value) for m in history) == list(range(POINTS))
