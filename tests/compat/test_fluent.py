"""``client_sdk.mlflow``: MLflow's fluent API through a real receiver into a real MLflow server.

The in-process tests exercise the light client (``client_sdk.mlflow._light``, what
``client_sdk.mlflow`` is where the mlflow package is not installed): runs, statuses, real run
ids, nesting, resuming, tags, and a receiver that is not there yet. The error table compares 50
calls with the real ``mlflow`` package, in the three client setups (import swap with mlflow
installed, light client, zero-code mode).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client_sdk.mlflow import _light as tb_mlflow
from client_sdk.mlflow._state import STATE
from tests.support.compat import base_env, receiver_idle
from tests.support.mlflow_reads import all_points, job_runs, user_tags
from tests.support.procs import CLIENTS_DIR, free_port, wait_until

TS = 1_700_000_500_000


@pytest.fixture
def fluent(receiver: Any, job: str) -> Iterator[Any]:
    """``client_sdk.mlflow`` pointed at a fresh receiver, reset afterwards."""
    tb_mlflow.configure(receiver=receiver.address, client_id=f"{job}-c", job=job)
    yield tb_mlflow
    _reset()


def _reset() -> None:
    while tb_mlflow.active_run() is not None:
        tb_mlflow.end_run()
    STATE.reset_session()
    STATE.receiver = None
    STATE.tracking_uri = None
    STATE.experiment = None
    STATE.options.clear()


def _runs_by_name(client: Any, job: str, count: int, receiver: Any) -> dict[str, Any]:
    """The job's client runs by name, once the client has delivered everything and the
    receiver has written it all to MLflow (call it after the last logging call)."""
    assert tb_mlflow.flush(30)
    wait_until(lambda: receiver_idle(receiver.data_dir), 60, what="the receiver to drain")
    runs = [r for r in job_runs(client, job) if r.data.tags.get("trackbridge.role") != "parent"]
    assert len(runs) == count, [r.info.run_name for r in runs]
    return {r.info.run_name: r for r in runs}


@pytest.mark.timeout(120)
def test_runs_end_finished_or_failed_and_know_their_mlflow_ids(
    fluent: Any, receiver: Any, mlflow_client: Any, job: str
) -> None:
    with fluent.start_run(run_name="ok", tags={"team": "a"}, description="note") as ok:
        assert fluent.log_param("lr", 0.1) == 0.1
        fluent.log_metric("loss", 0.5, step=1, timestamp=TS)
        assert ok.info.status == "RUNNING"
        assert fluent.active_run().info.run_name == "ok"
    assert ok.info.status == "FINISHED"
    with pytest.raises(ZeroDivisionError), fluent.start_run(run_name="bad") as bad:
        fluent.log_metric("loss", 1.0, step=0, timestamp=TS)
        _ = 1 / 0
    assert bad.info.status == "FAILED"
    assert fluent.active_run() is None
    assert fluent.last_active_run().info.run_name == "bad"

    runs = _runs_by_name(mlflow_client, job, 2, receiver)
    assert ok.info.run_id == runs["ok"].info.run_id
    assert ok.info.experiment_id == runs["ok"].info.experiment_id
    assert runs["ok"].info.status == "FINISHED"
    assert runs["bad"].info.status == "FAILED"
    assert user_tags(runs["ok"]) == {"team": "a"}
    assert runs["ok"].data.tags["mlflow.note.content"] == "note"
    assert all_points(mlflow_client, runs["ok"]) == {"loss": [("loss", 0.5, 1, TS)]}


@pytest.mark.timeout(120)
def test_auto_start_nesting_resume_and_tags(
    fluent: Any, receiver: Any, mlflow_client: Any, job: str
) -> None:
    fluent.log_metric("m", 1.0, step=0, timestamp=TS)  # no active run: one starts
    auto = fluent.active_run()
    assert auto is not None and re.match(r"^[a-z]+-[a-z]+-\d+$", auto.info.run_name)
    fluent.set_tags({"keep": 1, "drop": 2})
    fluent.delete_tag("drop")
    with fluent.start_run(run_name="child", nested=True) as child:
        fluent.log_metric("c", 2.0, step=0, timestamp=TS)
    fluent.end_run()
    with fluent.start_run(run_id=auto.info.run_id):  # resumed by its MLflow id
        fluent.log_metric("m", 3.0, step=1, timestamp=TS)
    fluent.log_metric("late", 4.0, step=0, timestamp=TS, run_id=child.info.run_id)
    assert fluent.active_run() is None  # logging to a run by id starts none

    runs = _runs_by_name(mlflow_client, job, 2, receiver)
    parent = runs[auto.info.run_name]
    assert parent.info.run_id == auto.info.run_id
    assert user_tags(parent) == {"keep": "1"}
    assert all_points(mlflow_client, parent) == {"m": [("m", 1.0, 0, TS), ("m", 3.0, 1, TS)]}
    assert runs["child"].data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert all_points(mlflow_client, runs["child"])["late"] == [("late", 4.0, 0, TS)]


@pytest.mark.timeout(120)
def test_a_run_of_an_earlier_process_is_resumed_only_by_its_own_client(
    receiver: Any, mlflow_client: Any, job: str
) -> None:
    tb_mlflow.configure(receiver=receiver.address, client_id=f"{job}-a", job=job)
    try:
        with tb_mlflow.start_run(run_name="first") as first:
            tb_mlflow.log_metric("x", 1.0, step=0, timestamp=TS)
        run_id = first.info.run_id
        assert run_id != first._record.key, "the receiver reported the MLflow run id"
        # A new process of the same client resumes it by id...
        tb_mlflow.configure(client_id=f"{job}-a")
        with tb_mlflow.start_run(run_id=run_id):
            tb_mlflow.log_metric("x", 2.0, step=1, timestamp=TS)
        # ...another client may not: it gets a run of its own.
        tb_mlflow.configure(client_id=f"{job}-b")
        with tb_mlflow.start_run(run_id=run_id):
            tb_mlflow.log_metric("y", 3.0, step=0, timestamp=TS)
        assert tb_mlflow.flush(30)
    finally:
        _reset()

    def settled() -> list[Any] | None:
        runs = [
            r
            for r in job_runs(mlflow_client, job)
            if r.data.tags.get("trackbridge.role") != "parent"
        ]
        ok = len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        if not (ok and all(r.data.metrics for r in runs)):
            return None
        # The first run is FINISHED with its first point before the resumed process's point
        # lands (each run is flushed on its own, in any order between runs): wait for it.
        resumed = len(mlflow_client.get_metric_history(run_id, "x")) >= 2
        return runs if resumed and run_id in {r.info.run_id for r in runs} else None

    runs = {r.info.run_id: r for r in wait_until(settled, 60, what="two finished runs")}
    assert all_points(mlflow_client, runs[run_id]) == {"x": [("x", 1.0, 0, TS), ("x", 2.0, 1, TS)]}
    (other,) = (r for i, r in runs.items() if i != run_id)
    assert other.data.tags["trackbridge.client_id"] == f"{job}-b"
    assert all_points(mlflow_client, other) == {"y": [("y", 3.0, 0, TS)]}


@pytest.mark.timeout(180)
def test_receiver_not_there_yet(
    start_receiver: Callable[..., Any], mlflow_client: Any, job: str, monkeypatch: Any
) -> None:
    """Logging goes on while the receiver is away; the run id waits only a bounded time (the
    run key stands in); once a receiver listens, everything arrives and the real id is known."""
    monkeypatch.setenv("TRACKBRIDGE_RUN_ID_TIMEOUT_S", "1")
    port = free_port()
    tb_mlflow.configure(receiver=f"127.0.0.1:{port}", client_id=f"{job}-c", job=job)
    try:
        run = tb_mlflow.start_run(run_name="early")
        for step in range(2000):
            tb_mlflow.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=TS + step)
        tb_mlflow.log_text("written while offline", "offline.txt")
        run_key = run.info.run_id  # the run key stands in for the id (bounded wait)
        assert run_key == run._record.key
        started = start_receiver(extra_args=("--listen", f"127.0.0.1:{port}"))
        assert tb_mlflow.flush(60)
        real_id = wait_until(
            lambda: None if run.info.run_id == run_key else run.info.run_id,
            30,
            what="the real run id",
        )
        tb_mlflow.end_run()
        assert tb_mlflow.flush(30)
    finally:
        _reset()
    (mlflow_run,) = _runs_by_name(mlflow_client, job, 1, started).values()
    assert real_id == mlflow_run.info.run_id
    assert len(all_points(mlflow_client, mlflow_run)["loss"]) == 2000
    wait_until(
        lambda: (
            [a.path for a in mlflow_client.list_artifacts(mlflow_run.info.run_id)]
            == ["offline.txt"]
        ),
        30,
        what="the artifact logged while offline",
    )


def _error_table(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    script = CLIENTS_DIR / "mlflow_errors.py"
    done = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout[done.stdout.index("{") :]))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_bad_calls_raise_what_mlflow_raises(
    receiver: Any, mlflow_server: Any, job: str, tmp_path: Path
) -> None:
    """50 bad (and borderline) calls: class name, error code and message, as real mlflow against
    a tracking server -- through the import swap and in zero-code mode."""
    common = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "TRACKBRIDGE_JOB": job}
    spool = {"TRACKBRIDGE_SPOOL_DIR": str(tmp_path / "spool")}
    real = _error_table(
        [],
        base_env(
            MLFLOW_TRACKING_URI=mlflow_server.uri, MLFLOW_EXPERIMENT_NAME=f"{job}-real", **common
        ),
    )
    swapped = _error_table(
        ["--bridge"],
        base_env(TRACKBRIDGE_RECEIVER=receiver.address, **common, **spool),
    )
    zero = _error_table(
        [],
        base_env(MLFLOW_TRACKING_URI=f"trackbridge://{receiver.address}", **common, **spool),
    )
    light = _error_table(
        ["--bridge", "--without-mlflow"],
        base_env(TRACKBRIDGE_RECEIVER=receiver.address, **common, **spool),
    )
    assert len(real) == 50
    assert sum(1 for outcome in real.values() if outcome[0] != "ok") >= 35
    for label, outcome in real.items():
        assert swapped[label] == outcome, f"{label} (import swap)"
        assert zero[label] == outcome, f"{label} (zero-code)"
        assert light[label] == outcome, f"{label} (light client, no mlflow package)"
