"""One behaviour per environment: with the mlflow package, ``client_sdk.mlflow`` is MLflow
pointed at the receiver; without it, the light client, which names ``pip install mlflow`` for
the rest of MLflow's API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.compat import base_env

pytestmark = pytest.mark.slow  # each test runs Python as a process

WITH_MLFLOW = """
import os
import client_sdk.mlflow as swapped
import mlflow
import mlflow.sklearn
print(swapped.MlflowClient is mlflow.MlflowClient, swapped.sklearn is mlflow.sklearn)
print(swapped.start_run is mlflow.start_run, swapped.log_metric is not mlflow.log_metric)
print(mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_registry_uri())
"""

WITHOUT_MLFLOW = """
import sys
sys.modules["mlflow"] = None  # as if it were not installed
import client_sdk.mlflow as mlflow
print(mlflow.exceptions.__name__)
try:
    mlflow.sklearn
except AttributeError as exc:
    print(exc)
"""


def _run(code: str, tmp_path: Path) -> list[str]:
    env = base_env(TRACKBRIDGE_RECEIVER="127.0.0.1:59999")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_with_mlflow_the_swap_is_mlflow_pointed_at_the_receiver(tmp_path: Path) -> None:
    flavors, calls, uris = _run(WITH_MLFLOW, tmp_path)
    assert flavors == "True True"
    assert calls == "True True"  # MLflow's own, but for log_metric's shortcut to the writer
    # MLflow logs to the receiver, and the program's environment is left as it was
    assert uris == "trackbridge://127.0.0.1:59999 None trackbridge://127.0.0.1:59999"
    assert not list(tmp_path.iterdir()), "nothing written to the working directory"


def test_without_mlflow_the_light_client_names_pip_install(tmp_path: Path) -> None:
    module, error = _run(WITHOUT_MLFLOW, tmp_path)
    assert module == "bridge.errors"  # the light client's errors, not MLflow's
    assert "client_sdk.mlflow has no 'sklearn' without the mlflow package" in error
    assert "`pip install mlflow`" in error
