"""Reads through the receiver answer what MLflow answers, within the documented scope.

Three zero-code clients log a run each (two in one job, one in another) through a receiver;
then, for each ``--read-scope``, a receiver answers a zero-code client's reads (experiments
searched and looked up, runs searched and fetched, metric histories), compared with the same
reads made directly against MLflow and cut by the scope's rule: experiments' metadata is
visible to all (so "Default" is listed, as MLflow's own tutorials expect), runs are the
caller's own (``own``), its job's (``job``) or all (``all``). And ``update_run(id, "FINISHED",
name)`` ends and renames the run, in both client modes. (Experiment id "0" is not compared:
to a zero-code client it is its job's experiment, by design, so that a script that names no
experiment logs into its job.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.compat import base_env, receiver_idle
from tests.support.procs import CLIENTS_DIR, MlflowServer, ReceiverProcess, wait_until

pytestmark = pytest.mark.slow

READ_BACK = CLIENTS_DIR / "read_back.py"
TAG_CLIENT_ID = "trackbridge.client_id"
TAG_JOB = "trackbridge.job"


def client(receiver: ReceiverProcess, client_id: str, job: str, tmp: Path, *args: str) -> Any:
    """Runs read_back.py as one client process; its JSON answer."""
    swap = "--swap" in args
    env = base_env(
        TRACKBRIDGE_CLIENT_ID=client_id,
        TRACKBRIDGE_JOB=job,
        TRACKBRIDGE_SPOOL_DIR=str(tmp / "spool" / client_id),
        XDG_CACHE_HOME=str(tmp / "cache"),
    )
    if swap:
        env["TRACKBRIDGE_RECEIVER"] = receiver.address
    else:
        env["MLFLOW_TRACKING_URI"] = f"trackbridge://{receiver.address}"
    done = subprocess.run(
        [sys.executable, str(READ_BACK), *args],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def direct(mlflow_client: Any, run_ids: list[str], sees: Callable[[dict[str, str]], bool]) -> Any:
    """The same reads, made directly against MLflow, cut by the scope's rule."""
    experiments = mlflow_client.search_experiments()
    default = mlflow_client.get_experiment_by_name("Default")
    ids = [e.experiment_id for e in experiments]
    searched = mlflow_client.search_runs(ids, max_results=1000)
    runs: dict[str, Any] = {}
    for run_id in run_ids:
        run = mlflow_client.get_run(run_id)
        history = mlflow_client.get_metric_history(run_id, "m")
        visible = sees(run.data.tags)
        runs[run_id] = [run.info.run_name, [h.value for h in history]] if visible else None
    return {
        "experiments": sorted(e.name for e in experiments),
        "default": [default.experiment_id, default.name],
        "searched": sorted(r.info.run_name for r in searched if sees(r.data.tags)),
        "runs": runs,
    }


@pytest.mark.timeout(600)
def test_reads_agree_with_mlflow_scope_by_scope_and_update_run_renames(
    start_receiver: Callable[..., ReceiverProcess],
    mlflow_server: MlflowServer,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    other = f"{job}-other"
    writer = start_receiver()
    logged = {
        name: client(writer, cid, j, tmp_path, "log", name)["run_id"]
        for name, cid, j in (("a-run", "a", job), ("b-run", "b", job), ("c-run", "c", other))
    }
    wait_until(lambda: receiver_idle(writer.data_dir), 120, what="the runs in MLflow")
    run_ids = list(logged.values())

    rules: dict[str, Callable[[dict[str, str]], bool]] = {
        "own": lambda tags: (
            tags.get(TAG_CLIENT_ID) == "a" and tags.get("trackbridge.role") == "client"
        ),
        "job": lambda tags: tags.get(TAG_JOB) == job and tags.get("trackbridge.role") == "client",
        "all": lambda tags: True,
    }
    for scope, sees in rules.items():
        reader = start_receiver(extra_args=("--read-scope", scope))
        answered = client(reader, "a", job, tmp_path, "read", *run_ids)
        expected = direct(mlflow_client, run_ids, sees)
        # What the scope hides, the receiver refuses, naming the scope.
        expected["runs"] = {
            k: v if v is not None else "PERMISSION_DENIED" for k, v in expected["runs"].items()
        }
        assert answered == expected, f"--read-scope {scope}"
        assert "Default" in answered["experiments"], "experiments are visible to all"
        reader.stop()

    # update_run ends and renames in one call, in both client modes.
    for mode in ("--zero-code", "--swap"):
        args = ("rename", job, *(("--swap",) if mode == "--swap" else ()))
        run_id = client(writer, "renamer", job, tmp_path, *args)["run_id"]
        wait_until(lambda: receiver_idle(writer.data_dir), 120, what="the rename in MLflow")
        info = mlflow_client.get_run(run_id).info
        assert (info.status, info.run_name) == ("FINISHED", "after"), mode
