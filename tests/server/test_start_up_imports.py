"""What a receiver loads to start: the bulk writer's SQLAlchemy and MLflow's table models
(~0.6 CPU s of a ~2.8 s start) load only when its MLflow is a database and the sink looks at
it, so a receiver whose MLflow is a server (the usual deployment, and most of the suite's
receiver starts) never loads them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.procs import REPO_ROOT, child_env

pytestmark = pytest.mark.slow

HEAVY = ["sqlalchemy", "mlflow.store.tracking.dbmodels.models", "server.flush.bulk.writer"]
_LOADED = """
import json, sys
heavy = sys.argv[1:]
import server.cli.main, server.cli.serve, server.receiver
from server.flush.bulk import open_sink
open_sink("http://127.0.0.1:5000", bulk=True)
serving = [m for m in heavy if m in sys.modules]
from server.flush.bulk import BulkWriter  # what a bulk sink's first look at its database loads
print(json.dumps([serving, [m for m in heavy if m in sys.modules]]))
"""


@pytest.mark.timeout(300)
def test_a_receiver_for_an_mlflow_server_does_not_load_the_bulk_writer() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, *HEAVY],
        env={**child_env(), "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for_a_server, for_a_database = json.loads(done.stdout.strip().splitlines()[-1])
    assert for_a_server == []
    assert for_a_database == HEAVY
