"""The bridge leaves the user's program state alone: importing ``client_sdk.mlflow`` (MLflow
itself pointed at the receiver, when mlflow is installed) and configuring it change nothing in
the environment, the working directory or the global random state. A fresh interpreter each,
so that what pytest's own process did before cannot hide or fake a change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import child_env

PROBE = """
import json, os, random, sys
random.seed(7)
env, cwd, draw_state = dict(os.environ), os.getcwd(), random.getstate()
import client_sdk.mlflow as mlflow
mode = "full" if hasattr(mlflow, "MlflowClient") else "light"
mlflow.configure(receiver="127.0.0.1:1", client_id="probe", job="probe")
changed = sorted(k for k in set(env) | set(os.environ)
                 if env.get(k) != os.environ.get(k) and not k.startswith("_MLFLOW_"))
print(json.dumps({"mode": mode, "changed": changed, "cwd": os.getcwd() == cwd,
                  "random": random.getstate() == draw_state,
                  "tracking_uri": mlflow.get_tracking_uri()}))
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_importing_and_configuring_the_module_leaves_the_program_alone(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["mode"] == "full"  # the dev environment has mlflow: MLflow itself, swapped
    assert report["changed"] == [], report
    assert report["cwd"] and report["random"], report
    assert report["tracking_uri"] == "trackbridge://127.0.0.1:1"  # MLflow still logs there
    assert list(tmp_path.iterdir()) == []  # nothing written where the script runs
