"""The deployment matrix: MLflow as its users deploy it, the same state through the bridge as logged
directly.

Each deployment is real processes, started once for its tests: the default ``mlflow server`` (it
serves artifacts: ``mlflow-artifacts:/`` locations), MLflow on PostgreSQL with artifacts on S3
(moto's server) proxied by MLflow and written by the receiver itself, MLflow with basic auth, the
receiver's embedded ``sqlite:///`` store, and a local artifact root. In each, one script
(``deployments/everything.py``: run artifacts, scikit-learn and PyTorch models, loading them back,
listing and downloading artifacts, the registry with aliases, logged-model search) runs with the
real ``mlflow`` and, at the same time, through one receiver: with the import swap and zero-code in
the default deployment, one of the two in each other one (``BRIDGED``). Then MLflow's contents are
compared, logged models' files included. In the default deployment the script goes on with
``mlflow.models.evaluate`` and Lightning autolog: they log and load models through the same
artifact calls as the rest, so the other deployments leave them out (each costs every process
seconds of CPU). The default deployment is the session's ``mlflow server`` (tests/conftest.py
starts it the same way: MLflow's defaults, and the script's names are its own). Under ``-n N --dist
loadfile`` each deployment is a work unit of its own (tests/support/scheduling.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.postgres import Postgres, create_database, start_postgres, stop_postgres
from tests.support.compat import ScriptRun, base_env, diff, receiver_idle, run_script, swap_import
from tests.support.deploy import ADMIN_PASSWORD, ADMIN_USER, launch_auth_mlflow
from tests.support.deployments import (
    BUCKET,
    Deployment,
    S3Server,
    mlflow_deployment,
    snapshots,
    start_s3,
)
from tests.support.procs import MlflowServer, launch_receiver, stop_mlflow_server, wait_until

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parent / "deployments" / "everything.py"
REAL, SWAP, ZERO = "real", "swap", "zero"
DEPLOYMENTS = ("default", "s3-proxied", "s3-receiver", "basic-auth", "embedded-sqlite", "local")
BRIDGED = {
    "default": (SWAP, ZERO),
    "s3-proxied": (ZERO,),
    "s3-receiver": (SWAP,),
    "basic-auth": (ZERO,),
    "embedded-sqlite": (SWAP,),
    "local": (ZERO,),
}
"""The ways through the bridge each deployment runs the script. With mlflow installed the
import swap is MLflow pointed at the receiver (client_sdk/mlflow/__init__.py): the two ways
differ in ``log_metric``'s fast path, not in the artifact, model and registry calls this matrix
is for. So the default deployment runs both, and the others one each, alternating (each
script process costs a loaded 2-core box half a minute)."""
FRAMEWORKS_IN = frozenset({"default"})
"""Where the script also runs ``mlflow.models.evaluate`` and Lightning autolog."""
# log_model infers pip requirements in a subprocess (tens of seconds on a loaded box); every
# mode takes MLflow's defaults after a second instead (the files are compared by path).
_QUICK_MODELS = {"MLFLOW_REQUIREMENTS_INFERENCE_TIMEOUT": "1"}


@dataclass
class Outcome:
    """How the script ran each way in one deployment, and what MLflow holds after each."""

    runs: dict[str, ScriptRun]
    states: dict[str, dict[str, Any]]
    receiver_log: str


@pytest.fixture(scope="module")
def postgres_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Postgres, S3Server]]:
    """One PostgreSQL cluster and one S3 server for the S3 deployments."""
    pg = start_postgres()  # .ci/test installs PostgreSQL: missing, it fails, as test_topology does
    try:
        s3 = start_s3(tmp_path_factory.mktemp("s3"))
        try:
            yield pg, s3
        finally:
            s3.stop()
    finally:
        stop_postgres(pg)


def _deploy(name: str, root: Path, request: pytest.FixtureRequest) -> Deployment:
    if name == "default":  # `mlflow server --backend-store-uri sqlite:///...`, nothing else
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        return Deployment(name, server.uri, server.uri)  # the session's: it stops it
    if name == "local":
        return mlflow_deployment(
            name, root, extra_args=("--default-artifact-root", str(root / "artifacts"))
        )
    if name == "embedded-sqlite":  # the receiver refuses a SQLite file in a missing folder
        root.mkdir(parents=True, exist_ok=True)
        return Deployment(
            name, f"sqlite:///{root / 'direct.db'}", f"sqlite:///{root / 'bridged.db'}"
        )
    if name == "basic-auth":  # as deploy/mlflow/basic_auth.ini: logins cached for a minute
        server = launch_auth_mlflow(root, f"sqlite:///{root / 'mlflow.db'}")
        env = {"MLFLOW_TRACKING_USERNAME": ADMIN_USER, "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
        return Deployment(
            name, server.uri, server.uri, env, env, [lambda: stop_mlflow_server(server)]
        )
    pg, s3 = request.getfixturevalue("postgres_s3")
    create_database(pg, name.replace("-", "_"))
    backend = pg.uri(name.replace("-", "_"))
    if name == "s3-proxied":  # MLflow holds the S3 credentials; writers only talk to MLflow
        return mlflow_deployment(
            name,
            root,
            backend_uri=backend,
            extra_args=("--artifacts-destination", f"s3://{BUCKET}/proxied"),
            server_env=s3.env(),
        )
    # Writers put files in S3 themselves: the receiver (and a direct script) hold the keys.
    return mlflow_deployment(
        name,
        root,
        backend_uri=backend,
        extra_args=("--no-serve-artifacts", "--default-artifact-root", f"s3://{BUCKET}/direct"),
        client_env=s3.env(),
    )


def _env(mode: str, deployment: Deployment, root: Path, receiver: str) -> dict[str, str]:
    common = {
        "MATRIX_NAME": f"{deployment.name}-{mode}",
        "XDG_CACHE_HOME": str(root / "cache"),
        **_QUICK_MODELS,
    }
    if deployment.name in FRAMEWORKS_IN:
        common["MATRIX_FRAMEWORKS"] = "1"
    if mode == REAL:
        return base_env(
            MLFLOW_TRACKING_URI=deployment.direct_uri, **common, **deployment.direct_env
        )
    env = base_env(
        TRACKBRIDGE_JOB=f"matrix-{deployment.name}",
        TRACKBRIDGE_CLIENT_ID=f"matrix-{mode}",
        TRACKBRIDGE_SPOOL_DIR=str(root / "spool" / mode),
        **common,
    )
    for name in [n for n in env if n.startswith("AWS_")]:
        del env[name]  # a bridged client holds no S3 credentials
    if mode == SWAP:
        env["TRACKBRIDGE_RECEIVER"] = receiver
    else:
        env["MLFLOW_TRACKING_URI"] = f"trackbridge://{receiver}"
    return env


def _run(mode: str, deployment: Deployment, root: Path, receiver: str) -> ScriptRun:
    work = root / "work" / mode
    work.mkdir(parents=True, exist_ok=True)
    script = SCRIPT
    if mode == SWAP:
        script = work / SCRIPT.name
        script.write_text(swap_import(SCRIPT.read_text()))
    return run_script(script, mode, _env(mode, deployment, root, receiver), work)


@pytest.fixture(scope="module")
def outcome(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    name: str = request.param
    root = tmp_path_factory.mktemp(f"deployment-{name}")
    deployment = _deploy(name, root / "mlflow", request)
    try:
        (root / "receiver-cwd").mkdir()
        receiver = launch_receiver(
            root,
            deployment.receiver_uri,
            flush_interval_s=0.25,
            env=deployment.receiver_env,
            cwd=root / "receiver-cwd",
        )
        try:
            modes = (REAL, *BRIDGED[name])
            with ThreadPoolExecutor(len(modes)) as pool:
                done = list(pool.map(lambda m: _run(m, deployment, root, receiver.address), modes))
            wait_until(
                lambda: receiver_idle(receiver.data_dir),
                120,
                interval_s=0.25,
                what="the receiver to write everything to MLflow",
            )
        finally:
            with contextlib.suppress(AssertionError):
                receiver.stop()
        names = {m: f"{name}-{m}" for m in modes}
        env = deployment.direct_env
        if deployment.direct_uri == deployment.receiver_uri:
            by_name = snapshots(deployment.direct_uri, env, list(names.values()))
        else:
            by_name = snapshots(deployment.direct_uri, env, [names[REAL]])
            bridged = [names[m] for m in BRIDGED[name]]
            by_name.update(snapshots(deployment.receiver_uri, env, bridged))
        yield Outcome(
            {r.mode: r for r in done},
            {m: by_name[n] for m, n in names.items()},
            receiver.log_path.read_text(errors="replace"),
        )
    finally:
        deployment.stop()


def _warnings(log: str, last: int = 30) -> str:
    lines = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    return "\n".join(line[:600] for line in lines[-last:]) or "(none)"


@pytest.mark.parametrize(
    ("outcome", "mode"),
    [pytest.param(d, m, id=f"{d}-{m}") for d in DEPLOYMENTS for m in BRIDGED[d]],
    indirect=["outcome"],
)
def test_the_bridge_leaves_what_mlflow_itself_leaves(outcome: Outcome, mode: str) -> None:
    real, bridged = outcome.runs[REAL], outcome.runs[mode]
    assert real.returncode == 0, f"logging directly failed:\n{real.output[-4000:]}"
    assert bridged.returncode == 0, (
        f"through the bridge ({mode}) failed:\n{bridged.output[-4000:]}\n"
        f"the receiver's warnings:\n{_warnings(outcome.receiver_log)}"
    )
    expected = outcome.states[REAL]
    assert expected, f"logging directly left nothing in MLflow:\n{real.output[-3000:]}"
    difference = diff(expected, outcome.states[mode], mode)
    assert not difference, f"MLflow state differs ({mode})\n{difference}\n{bridged.output[-3000:]}"
    assert "upload failed" not in outcome.receiver_log, outcome.receiver_log[-4000:]
