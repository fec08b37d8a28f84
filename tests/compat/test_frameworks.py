"""Frameworks' own MLflow integrations, end to end: each script runs with the real ``mlflow``
and, unmodified, in zero-code mode through a real receiver, both into the session's MLflow
server, each into an experiment of its own (the scripts take its name from
``FRAMEWORK_EXPERIMENT``); then the MLflow states are compared, the experiment names made
equal (``tests/compat/frameworks/``).

Values that no two runs share (timings, system load) are compared by their keys only: the
``volatile`` patterns of each framework.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.compat import ScriptRun, base_env, diff, receiver_idle, run_script, snapshot
from tests.support.procs import MlflowServer, ReceiverProcess, launch_receiver, wait_until

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

FRAMEWORKS_DIR = Path(__file__).resolve().parent / "frameworks"


@dataclass(frozen=True)
class Framework:
    """A framework script and what of its state varies from run to run."""

    name: str
    volatile: str = r"$^"
    """Metric keys (a regex) whose values and point counts are not compared."""
    volatile_params: str = r"$^"
    """Param keys (a regex) whose values are not compared."""


# mlflow.pytorch.autolog with a Lightning Trainer (models and checkpoints included) is the
# deployment matrix's, in both client modes: tests/compat/deployments/everything.py.
FRAMEWORKS = (
    Framework("lightning_logger"),
    Framework(
        "transformers_trainer",
        volatile=r"^(train_runtime|train_samples_per_second|train_steps_per_second)$",
    ),
    Framework("system_metrics", volatile=r"^system/"),
)


def experiment(mode: str, framework: Framework) -> str:
    """The experiment (and the bridged client's job) of a framework's run in one mode."""
    return f"{mode}-{framework.name}"


def test_every_framework_script_is_listed() -> None:
    assert {p.stem for p in FRAMEWORKS_DIR.glob("*.py")} == {f.name for f in FRAMEWORKS}


@dataclass
class Outcome:
    runs: dict[tuple[str, str], ScriptRun]
    states: dict[tuple[str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def outcome(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer
) -> Iterator[Outcome]:
    root = tmp_path_factory.mktemp("frameworks")
    receiver: ReceiverProcess | None = None
    try:
        receiver = launch_receiver(root, mlflow_server.uri, flush_interval_s=0.25)
        jobs = [(mode, f) for f in FRAMEWORKS for mode in ("real", "bridge")]

        def run(job: tuple[str, Framework]) -> ScriptRun:
            mode, framework = job
            name = experiment(mode, framework)
            common = {"FRAMEWORK_EXPERIMENT": name, "XDG_CACHE_HOME": str(root / "cache")}
            if mode == "real":
                env = base_env(MLFLOW_TRACKING_URI=mlflow_server.uri, **common)
            else:
                assert receiver is not None
                env = base_env(
                    MLFLOW_TRACKING_URI=f"trackbridge://{receiver.address}",
                    TRACKBRIDGE_JOB=name,
                    TRACKBRIDGE_CLIENT_ID=f"{framework.name}-client",
                    TRACKBRIDGE_SPOOL_DIR=str(root / "spool" / framework.name),
                    **common,
                )
            work = root / "work" / mode / framework.name
            return run_script(FRAMEWORKS_DIR / f"{framework.name}.py", mode, env, work)

        with ThreadPoolExecutor(2) as pool:
            runs = {(r.mode, r.script): r for r in pool.map(run, jobs)}
        wait_until(lambda: receiver_idle(receiver.data_dir), 120, what="the receiver to drain")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow_server.uri)
        states = {}
        for mode, framework in jobs:
            name = experiment(mode, framework)
            found = json.dumps(snapshot(client, name, timestamps=False))
            states[(mode, framework.name)] = json.loads(found.replace(name, "<experiment>"))
        yield Outcome(runs, states)
    finally:
        if receiver is not None:
            with contextlib.suppress(AssertionError):
                receiver.stop()


def _steady(state: dict[str, Any], framework: Framework) -> dict[str, Any]:
    """The state with volatile values replaced by placeholders."""
    steady = {}
    for run_label, original in state.items():
        run = dict(original)
        run["metrics"] = {
            k: ("<varies>" if re.search(framework.volatile, k) else points)
            for k, points in run["metrics"].items()
        }
        run["params"] = {
            k: ("<varies>" if re.search(framework.volatile_params, k) else v)
            for k, v in run["params"].items()
        }
        steady[run_label] = run
    return steady


@pytest.mark.parametrize("framework", FRAMEWORKS, ids=lambda f: f.name)
def test_framework_logs_the_same_through_the_bridge(outcome: Outcome, framework: Framework) -> None:
    real = outcome.runs[("real", framework.name)]
    bridged = outcome.runs[("bridge", framework.name)]
    assert real.returncode == 0, real.output[-3000:]
    assert bridged.returncode == 0, bridged.output[-3000:]
    expected = _steady(outcome.states[("real", framework.name)], framework)
    assert expected, f"{framework.name} left nothing in MLflow:\n{real.output[-3000:]}"
    assert any(run["metrics"] for run in expected.values()), "no metrics to compare"
    difference = diff(
        expected, _steady(outcome.states[("bridge", framework.name)], framework), "bridge"
    )
    assert not difference, (
        f"{framework.name}: MLflow state differs\n{difference}\n{bridged.output[-3000:]}"
    )
