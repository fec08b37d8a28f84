"""deploy/ files run for real where no Docker engine or cluster is needed: the Kubernetes
manifests against Kubernetes' own schemas, the compose TLS health check against a real receiver
with certificates from `trackbridge tls init`, the backup's SQLite copy of a live queue, the
script that makes the receiver's least-privilege MLflow user against a real basic-auth MLflow,
and the systemd install script into a staging tree."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_deploy_files import DEPLOY, dotenv, load_compose, unit
from tests.support.procs import TRACKBRIDGE_EXE, child_env, stop_mlflow_server
from tests.support.security import (
    AuthMlflow,
    as_admin,
    auth_service_client,
    launch_auth_mlflow,
)

KUBERNETES_VERSION = "1.37.0"
"""The newest schemas kubernetes-validate (pinned in .ci/constraints.txt) carries."""


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[no-any-return]


# -- Kubernetes --------------------------------------------------------------------------------


def _manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every object of deploy/k8s and deploy/k8s-fleet (not kustomizations, not patches)."""
    for folder in (DEPLOY / "k8s", DEPLOY / "k8s-fleet"):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        patches = {p["path"] for p in kustomization.get("patches", [])}
        for path in sorted(folder.rglob("*.yaml")):
            if path.name == "kustomization.yaml" or path.name in patches:
                continue
            for doc in yaml.safe_load_all(path.read_text()):
                yield path, doc


def test_kubernetes_manifests_match_kubernetes_schemas() -> None:
    checked = []
    for path, doc in _manifests():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.relative_to(DEPLOY)} {doc['kind']}: {exc.message} at {exc.path}")
        checked.append(doc["kind"])
    assert {"StatefulSet", "Service", "ConfigMap", "Secret", "Ingress"} <= set(checked)


# -- compose: TLS health check and backup, on a real receiver -----------------------------------


def _backup_snippet() -> str:
    """The Python program deploy/backup.sh runs in a container to copy a SQLite database."""
    text = (DEPLOY / "backup.sh").read_text()
    found = re.search(r"python -c '\n(.*?)\n' \"\$2\"", text, re.S)
    assert found, "deploy/backup.sh: its sqlite_backup program"
    return found.group(1)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_compose_tls_health_check_passes_with_real_certificates(
    tmp_path: Path, start_receiver: Any
) -> None:
    service = load_compose("compose.yaml", "compose.tls.yaml")["services"]["receiver"]
    name = dotenv(DEPLOY / ".env.example")["TRACKBRIDGE_TLS_NAME"]
    certs = tmp_path / "certs"
    made = _run([str(TRACKBRIDGE_EXE), "tls", "init", "--dir", str(certs), "--name", name],
                timeout=60, env=child_env())  # fmt: skip
    assert made.returncode == 0, made.stderr
    (mount,) = [v for v in service["volumes"] if v.startswith("./certs:")]
    inside = mount.split(":")[1]

    def here(value: str) -> str:  # a path in the container, on this machine
        return value.replace(inside, str(certs))

    env = {k: here(str(v)) for k, v in service["environment"].items() if "TLS" in k}
    args = [a for a in service["command"] if a != "serve"]
    data_dir = tmp_path / "receiver-data"
    receiver = start_receiver(data_dir=data_dir, extra_args=(
        "--tls-cert", env["TRACKBRIDGE_SERVE_TLS_CERT"],
        "--tls-key", env["TRACKBRIDGE_SERVE_TLS_KEY"], *args,
    ))  # fmt: skip

    check = [here(a) for a in service["healthcheck"]["test"][2:]]
    assert check[0] == "health"
    passed = _run([str(TRACKBRIDGE_EXE), *check, "--receiver", receiver.address],
                  timeout=60, env=child_env())  # fmt: skip
    assert passed.returncode == 0, passed.stdout + passed.stderr

    # deploy/backup.sh's copy of the live queue is a whole SQLite database
    copy = subprocess.run(
        [sys.executable, "-c", _backup_snippet(), str(data_dir / "queue.db")],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    backup = tmp_path / "queue-backup.db"
    backup.write_bytes(copy.stdout)
    with sqlite3.connect(backup) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
    assert {"runs", "batches"} <= tables


# -- compose: the receiver's own MLflow user -----------------------------------------------------


@pytest.fixture(scope="module")
def auth_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMlflow]:
    auth = launch_auth_mlflow(tmp_path_factory.mktemp("auth-mlflow"))
    try:
        yield auth
    finally:
        stop_mlflow_server(auth.server)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_receivers_mlflow_user_is_made_plain_and_can_do_its_work(
    tmp_path: Path, auth_mlflow: AuthMlflow, job: str
) -> None:
    service = load_compose("compose.yaml")["services"]["mlflow-user"]
    admin_password = tmp_path / "admin-password"
    admin_password.write_text(auth_mlflow.admin_password)
    receiver_password = tmp_path / "receiver-password"
    receiver_password.write_text(f"receiver-{os.urandom(8).hex()}")
    env = child_env(
        MLFLOW_TRACKING_URI=auth_mlflow.uri,
        MLFLOW_TRACKING_USERNAME=service["environment"]["MLFLOW_TRACKING_USERNAME"],
        MLFLOW_TRACKING_PASSWORD_FILE=str(admin_password),
        RECEIVER_MLFLOW_USERNAME="trackbridge",
        RECEIVER_MLFLOW_PASSWORD_FILE=str(receiver_password),
    )
    script = str(DEPLOY / "mlflow" / "create_user.py")
    for _ in range(2):  # made, then (every `up`) found and its password set again
        done = _run([sys.executable, script], timeout=120, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    with as_admin(auth_mlflow):
        assert auth_service_client(auth_mlflow).get_user("trackbridge").is_admin is False

    # with that login, what the receiver needs: create its job's experiment and write to it
    as_receiver = child_env(
        MLFLOW_TRACKING_USERNAME="trackbridge",
        MLFLOW_TRACKING_PASSWORD_FILE=str(receiver_password),
    )
    doctor = _run(
        [str(TRACKBRIDGE_EXE), "doctor", "--tracking-uri", auth_mlflow.uri, "--experiment", job,
         "--data-dir", str(tmp_path)],
        timeout=120, env=as_receiver,
    )  # fmt: skip
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


# -- systemd -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_install_script_puts_trackbridge_where_the_unit_runs_it(tmp_path: Path) -> None:
    script = DEPLOY / "systemd" / "install.sh"
    default_prefix = re.search(r"prefix=\$\{TRACKBRIDGE_PREFIX:-([^}]+)\}", script.read_text())
    assert default_prefix
    exec_start = dict((k, v) for _, k, v in unit(DEPLOY / "systemd" / "trackbridge.service"))
    assert shlex.split(exec_start["ExecStart"])[0] == f"{default_prefix.group(1)}/bin/trackbridge"

    prefix, root = tmp_path / "opt" / "trackbridge", tmp_path / "root"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(TRACKBRIDGE_PREFIX=str(prefix), TRACKBRIDGE_ROOT=str(root),
               TRACKBRIDGE_PIP_ARGS="--no-deps")  # fmt: skip
    done = _run(["bash", str(script)], timeout=500, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("trackbridge ")  # the installed command answered --version
    assert (prefix / "bin" / "trackbridge").is_file()
    units = root / "etc" / "systemd" / "system"
    assert (units / "trackbridge.service").read_text() == (
        DEPLOY / "systemd" / "trackbridge.service"
    ).read_text()
    drop_in = units / "trackbridge.service.d" / "credentials.conf"
    assert stat.S_IMODE(drop_in.stat().st_mode) == 0o600
