"""Conformance: real MLflow scripts, run with the real ``mlflow`` and through the bridge, leave
the same state in MLflow.

Every script in ``tests/compat/conformance/`` runs (a) with the real ``mlflow`` package against
the session's MLflow server, and through a receiver, each into an MLflow server of its own:
(b) with ``import mlflow`` swapped for ``import client_sdk.mlflow as mlflow``, (c) unmodified
with ``MLFLOW_TRACKING_URI=trackbridge://...`` (zero-code mode). With mlflow installed the swap
is MLflow pointed at the receiver, with trackbridge's own ``log_metric``/``log_metrics`` (and
``configure``, ``flush``) in front: so the scripts that log metrics in many ways run swapped,
the rest zero-code, and the scripts whose values and errors are checked at the call run both
(``Script.modes``). Then the state each left in MLflow is compared: experiments, runs by name
and nesting, statuses, params, user tags, every metric point, artifacts' paths and bytes. Any
difference fails with a diff.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.compat import (
    CONFORMANCE_DIR,
    ScriptRun,
    base_env,
    diff,
    receiver_idle,
    run_script,
    snapshot,
    swap_import,
)
from tests.support.procs import (
    MlflowServer,
    ReceiverProcess,
    launch_mlflow_server,
    launch_receiver,
    stop_mlflow_server,
    wait_until,
)

pytestmark = [pytest.mark.timeout(1800), pytest.mark.slow]

REAL, SWAP, ZERO = "real mlflow", "import swap", "zero-code"
BRIDGE_MODES = (SWAP, ZERO)


@dataclass(frozen=True)
class Script:
    """A conformance script and how to compare it."""

    name: str
    timestamps: bool = False
    """Compare metric timestamps (the script passes every timestamp itself)."""
    real_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the real-mlflow run only."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every mode."""
    modes: tuple[str, ...] = (ZERO,)
    """The ways through the bridge it runs (besides the real ``mlflow``)."""


# log_model infers a model's pip requirements in a subprocess that imports the flavor and loads
# the model (tens of seconds on a loaded 2-core box); the models' files are compared by path
# only, so every mode takes MLflow's default requirements after a second instead.
_QUICK_MODELS = {"MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT": "1"}


SCRIPTS = (
    Script("quickstart", modes=BRIDGE_MODES),
    Script("context_run", timestamps=True, modes=(SWAP,)),
    Script("nested_config"),
    Script("artifact_files"),
    Script("hpo_sweep", modes=(SWAP,)),
    Script("failing_run", modes=(SWAP,)),
    # Real MLflow logs 10,000 points one request each unless asked to batch them.
    Script(
        "many_points",
        timestamps=True,
        real_env={
            "MLFLOW_ENABLE_ASYNC_LOGGING": "true",
            "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS": "1",
        },
        modes=(SWAP,),
    ),
    Script("torch_train", modes=(SWAP,)),
    Script("tags_lifecycle"),
    Script("metric_values", timestamps=True, modes=BRIDGE_MODES),
    Script("media"),
    Script("experiments"),
    Script("manual_runs"),
    Script("bad_input_handled", modes=BRIDGE_MODES),
    Script("client_api", timestamps=True),
    Script("best_run_search"),
    Script("datasets"),
    Script("seeded", modes=(SWAP,)),
    Script("experiment_ids"),
    Script("nested_tree", modes=(SWAP,)),
    Script("sklearn_autolog", env=_QUICK_MODELS),
)


def test_every_conformance_script_is_listed() -> None:
    on_disk = {p.stem for p in CONFORMANCE_DIR.glob("*.py")}
    assert on_disk == {s.name for s in SCRIPTS}


@dataclass
class Results:
    """Every script's runs and the MLflow state each mode left."""

    runs: dict[tuple[str, str], ScriptRun]
    states: dict[tuple[str, str], dict[str, Any]]


def _servers(root: Path, real: MlflowServer) -> dict[str, MlflowServer]:
    """The session's server for real mlflow, and a fresh one for each bridge mode."""
    with ThreadPoolExecutor(len(BRIDGE_MODES)) as pool:
        futures = {
            mode: pool.submit(launch_mlflow_server, root / f"mlflow-{i}")
            for i, mode in enumerate(BRIDGE_MODES)
        }
        servers = {REAL: real}
        errors = []
        for mode, future in futures.items():
            try:
                servers[mode] = future.result()
            except Exception as exc:  # keep the others to stop them
                errors.append(exc)
    if errors:
        for mode in BRIDGE_MODES:
            if mode in servers:
                stop_mlflow_server(servers[mode])
        raise errors[0]
    return servers


def _env(
    mode: str,
    script: Script,
    servers: dict[str, MlflowServer],
    receivers: dict[str, ReceiverProcess],
    root: Path,
) -> dict[str, str]:
    common = {
        "MLFLOW_EXPERIMENT_NAME": script.name,
        "XDG_CACHE_HOME": str(root / "cache"),
        **script.env,
    }
    if mode == REAL:
        return base_env(MLFLOW_TRACKING_URI=servers[REAL].uri, **common, **script.real_env)
    bridge = {
        "TRACKBRIDGE_JOB": script.name,
        "TRACKBRIDGE_CLIENT_ID": f"{script.name}-{'swap' if mode == SWAP else 'zero'}",
        "TRACKBRIDGE_SPOOL_DIR": str(root / "spool" / mode.replace(" ", "-") / script.name),
    }
    if mode == SWAP:
        return base_env(TRACKBRIDGE_RECEIVER=receivers[SWAP].address, **common, **bridge)
    return base_env(
        MLFLOW_TRACKING_URI=f"trackbridge://{receivers[ZERO].address}", **common, **bridge
    )


def _run(mode: str, script: Script, servers: Any, receivers: Any, root: Path) -> ScriptRun:
    path = CONFORMANCE_DIR / f"{script.name}.py"
    work = root / "work" / mode.replace(" ", "-") / script.name
    if mode == SWAP:
        work.mkdir(parents=True, exist_ok=True)
        swapped = work / path.name
        swapped.write_text(swap_import(path.read_text()))
        path = swapped
    return run_script(path, mode, _env(mode, script, servers, receivers, root), work)


def _snapshots(server: MlflowServer) -> dict[str, dict[str, Any]]:
    """What one MLflow server holds for each script."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    return {s.name: snapshot(client, s.name, timestamps=s.timestamps) for s in SCRIPTS}


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer
) -> Iterator[Results]:
    root = tmp_path_factory.mktemp("conformance")
    started = time.monotonic()
    servers = _servers(root, mlflow_server)
    receivers: dict[str, ReceiverProcess] = {}
    try:
        with ThreadPoolExecutor(len(BRIDGE_MODES)) as pool:
            starting = {
                mode: pool.submit(
                    launch_receiver,
                    root,
                    servers[mode].uri,
                    flush_interval_s=0.25,
                    data_dir=root / f"receiver-{mode.replace(' ', '-')}",
                )
                for mode in BRIDGE_MODES
            }
            for mode, future in starting.items():
                with contextlib.suppress(Exception):  # raised below, once the others are kept
                    receivers[mode] = future.result()
            for future in starting.values():
                future.result()
        print(f"servers and receivers up: {time.monotonic() - started:.1f} s")
        jobs = [(mode, script) for script in SCRIPTS for mode in (REAL, *script.modes)]
        # Heaviest first, so the long ones do not finish last.
        heavy = ("sklearn_autolog", "many_points", "torch_train")
        jobs.sort(key=lambda j: j[1].name not in heavy)
        workers = max(3, min(6, (os.cpu_count() or 2) + 2))
        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(lambda j: _run(j[0], j[1], servers, receivers, root), jobs))
        runs = {(r.mode, r.script): r for r in done}
        print("script runs (s):", ", ".join(f"{r.script}/{r.mode}={r.seconds:.1f}" for r in done))
        phase = time.monotonic()
        for mode, receiver in receivers.items():
            wait_until(
                lambda data_dir=receiver.data_dir: receiver_idle(data_dir),
                120,
                interval_s=0.25,
                what=f"the {mode} receiver to write everything to MLflow",
            )
        with ThreadPoolExecutor(len(servers)) as pool:  # one reader per MLflow server
            by_mode = dict(zip(servers, pool.map(_snapshots, servers.values()), strict=True))
        states = {
            (mode, name): state for mode, found in by_mode.items() for name, state in found.items()
        }
        print(f"drain and snapshots: {time.monotonic() - phase:.1f} s")
        yield Results(runs, states)
    finally:
        for receiver in receivers.values():
            with contextlib.suppress(AssertionError):
                receiver.stop()
        for mode in BRIDGE_MODES:
            stop_mlflow_server(servers[mode])


@pytest.mark.parametrize(
    ("script", "mode"),
    [pytest.param(s, m, id=f"{s.name}-{m}") for s in SCRIPTS for m in s.modes],
)
def test_script_leaves_the_same_mlflow_state(results: Results, script: Script, mode: str) -> None:
    real = results.runs[(REAL, script.name)]
    bridged = results.runs[(mode, script.name)]
    assert bridged.returncode == real.returncode, (
        f"{script.name}: exit status {bridged.returncode} through the bridge ({mode}), "
        f"{real.returncode} with real mlflow\n--- real mlflow output\n{real.output[-3000:]}\n"
        f"--- {mode} output\n{bridged.output[-3000:]}"
    )
    # Nothing in the working directory but what the script itself writes there.
    assert bridged.files == real.files, f"{script.name} ({mode}) left files: {bridged.files}"
    expected = results.states[(REAL, script.name)]
    assert expected, f"{script.name} left nothing in MLflow:\n{real.output[-3000:]}"
    difference = diff(expected, results.states[(mode, script.name)], mode)
    assert not difference, (
        f"{script.name}: MLflow state differs ({mode})\n{difference}\n"
        f"--- {mode} output\n{bridged.output[-3000:]}"
    )
