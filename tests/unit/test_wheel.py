"""The wheel a site installs: built from a copy of the source tree, installed into a fresh
virtual environment with only grpcio, protobuf and tenacity (no mlflow), its light client works
with no receiver to talk to (it spools), and it claims exactly three import names."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT_DEPENDENCIES = ("grpcio", "protobuf", "tenacity")
SOURCES = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "bridge",
    "client_sdk",
    "server",
    "bench",
    "demo",
)

# Run inside the fresh environment: the writer and the fluent module log to a receiver that is
# not there; what they logged waits in the spool.
CLIENT_SCRIPT = """
import importlib.util, json, os, sys
from pathlib import Path
assert importlib.util.find_spec("mlflow") is None, "mlflow must not be installed"
from client_sdk import Writer, WriterConfig
spool = Path(sys.argv[2])
config = WriterConfig(
    receiver=sys.argv[1], client_id="site-1", job="wheel", spool_dir=str(spool / "writer")
)
writer = Writer(config=config)
writer.start_run(run_name="site-1")
writer.log_params({"lr": 0.01})
for step in range(10):
    writer.log_metric("loss", 1.0 / (step + 1), step=step)
writer.end_run("FINISHED")
undelivered = writer.close(timeout_s=1)
os.environ["TRACKBRIDGE_RECEIVER"] = sys.argv[1]
os.environ["TRACKBRIDGE_SPOOL_DIR"] = str(spool / "fluent")
import client_sdk.mlflow as mlflow
with mlflow.start_run(run_name="fluent"):
    mlflow.log_metric("loss", 0.5, step=1)
print(json.dumps({
    "undelivered": int(undelivered),
    "writer_spool": sorted(p.name for p in (spool / "writer").rglob("*.spool.db")),
    "fluent": mlflow.__name__,
}))
"""


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_installs_a_light_client_without_mlflow(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(source),
        ],
        timeout=300,
    )
    (wheel,) = dist.glob("trackbridge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"bridge", "client_sdk", "server"}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # No pip of its own (ensurepip cost more CPU than the rest of the test): this pip installs
    # into it, and lists it, through ``--python``.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    # The wheel with what its metadata declares, at the versions this suite runs with: grpcio,
    # protobuf and tenacity (and what those three need themselves), nothing of the receiver's.
    pins = tmp_path / "pins.txt"
    pins.write_text("".join(f"{d}=={importlib.metadata.version(d)}\n" for d in CLIENT_DEPENDENCIES))
    _run([*pip, "install", "-q", "-c", str(pins), str(wheel)], env=env, timeout=300)
    listed = _run([*pip, "list", "--format", "json"], env=env, timeout=120)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert set(CLIENT_DEPENDENCIES) <= installed
    assert not installed & {"mlflow", "mlflow-skinny", "cryptography", "starlette", "torch"}
    done = _run(
        [str(python), "-c", CLIENT_SCRIPT, f"127.0.0.1:{_free_port()}", str(tmp_path / "spool")],
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["undelivered"] > 0
    assert result["writer_spool"], "the writer's events must wait in its spool"
    assert result["fluent"] == "client_sdk.mlflow"
    shown = _run(
        [str(venv / "bin" / "trackbridge"), "--version"], timeout=60, cwd=tmp_path, env=env
    )
    assert shown.stdout.strip() == f"trackbridge {importlib.metadata.version('trackbridge')}"
    # a site delivers a dead client's spool without the receiver's extra
    _run([str(python), "-m", "client_sdk.sync", "--help"], timeout=60, cwd=tmp_path, env=env)
