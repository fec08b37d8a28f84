"""MLflow deployments as their users run them, for the deployment matrix
(tests/compat/test_deployments.py): each one a real ``mlflow server`` (or the receiver's own
``sqlite:///`` store), what a script logging directly needs, and what the receiver needs.

The S3 deployments keep their artifacts in moto's S3-compatible server (``moto_server``, a real
process on 127.0.0.1) with MLflow's metadata on a throwaway PostgreSQL cluster. Only MLflow
itself, a script logging directly and the receiver hold S3 or MLflow credentials; a client
logging through the receiver never does.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import (
    BIN_DIR,
    REPO_ROOT,
    MlflowServer,
    child_env,
    launch_mlflow_server,
    stop_mlflow_server,
    wait_until,
)

S3_START_TIMEOUT_S = 60.0
SNAPSHOT_TIMEOUT_S = 300.0
BUCKET = "mlflow"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "matrix-test-key",
    "AWS_SECRET_ACCESS_KEY": "matrix-test-secret",  # moto accepts any; a throwaway server's
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Deployment:
    """One MLflow deployment of the matrix, running."""

    name: str
    direct_uri: str
    """What a script logging directly (and the snapshot of its state) uses as tracking URI."""
    receiver_uri: str
    """The receiver's ``--tracking-uri`` (and the snapshot of the bridged state's)."""
    direct_env: dict[str, str] = field(default_factory=dict)
    """Credentials a script logging directly needs (S3, basic auth)."""
    receiver_env: dict[str, str] = field(default_factory=dict)
    """Credentials the receiver needs; bridged clients get none of them."""
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Stops what the deployment started, last started first."""
        for stop in reversed(self.stops):
            with contextlib.suppress(Exception):
                stop()


@dataclass
class S3Server:
    """A running ``moto_server`` (S3 on 127.0.0.1) with the bucket made."""

    endpoint: str
    proc: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        """What MLflow's S3 client needs to use it."""
        return {**S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_s3(root: Path) -> S3Server:
    """``moto_server -H 127.0.0.1 -p 0``; waits for its address, makes the bucket."""
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "moto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(BIN_DIR / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=root,
        )
    found: list[str] = []

    def listening() -> bool:
        match = re.search(r"Running on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if match:
            found.append(match.group(1))
        return bool(found) or proc.poll() is not None

    try:
        wait_until(listening, S3_START_TIMEOUT_S, interval_s=0.2, what="moto_server to listen")
        assert found, f"moto_server exited:\n{log_path.read_text()[-3000:]}"
        request = urllib.request.Request(f"{found[0]}/{BUCKET}", method="PUT")  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            assert response.status == 200
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return S3Server(found[0], proc)


def mlflow_deployment(
    name: str,
    root: Path,
    *,
    backend_uri: str | None = None,
    extra_args: tuple[str, ...] = (),
    server_env: dict[str, str] | None = None,
    client_env: dict[str, str] | None = None,
) -> Deployment:
    """An ``mlflow server`` deployment; ``client_env`` goes to direct scripts and the
    receiver (whoever writes to MLflow: S3 credentials, a login)."""
    server: MlflowServer = launch_mlflow_server(
        root, backend_uri=backend_uri, extra_args=extra_args, env=server_env
    )
    return Deployment(
        name,
        server.uri,
        server.uri,
        dict(client_env or {}),
        dict(client_env or {}),
        [lambda: stop_mlflow_server(server)],
    )


_SNAPSHOT = """
import json, sys
from mlflow.tracking import MlflowClient
from tests.support.compat import snapshot
client = MlflowClient(sys.argv[1])
print(json.dumps({p: snapshot(client, p, timestamps=False) for p in sys.argv[2:]}))
"""


def snapshots(uri: str, env: dict[str, str], names: list[str]) -> dict[str, dict[str, Any]]:
    """MLflow's contents for each experiment name, read in a process of its own (with the
    deployment's credentials, which this one never holds), names made comparable: each
    ``name`` is written ``<name>``."""
    done = subprocess.run(
        [sys.executable, "-c", _SNAPSHOT, uri, *names],
        env={**child_env(**env), "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=SNAPSHOT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"snapshot failed:\n{done.stderr[-5000:]}"
    states = json.loads(done.stdout.strip().splitlines()[-1])
    return {n: json.loads(json.dumps(states[n]).replace(n, "<name>")) for n in names}


@contextlib.contextmanager
def stopping(deployment: Deployment) -> Iterator[Deployment]:
    """The deployment, stopped on the way out."""
    try:
        yield deployment
    finally:
        deployment.stop()
