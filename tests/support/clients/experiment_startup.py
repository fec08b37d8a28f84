"""A script that starts one run per case, driven by a test that kills the receiver inside the
run's start-up: for case ``i = 0, 1, ...`` it waits for ``DIR/<i>.go`` (holding the case's
name) or ``DIR/end``, then ``set_experiment(PREFIX-<case>)``, ``start_run(run_name=<case>)``,
a few points, ``end_run``, and writes ``DIR/<i>.done``.

Zero-code (``MLFLOW_TRACKING_URI=trackbridge://...``) or, with ``--swap``, the import swap.
Usage: experiment_startup.py DIR PREFIX [--swap]
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

if "--swap" in sys.argv:
    from client_sdk import mlflow
else:
    import mlflow  # type: ignore[no-redef]

POINTS = 20
WAIT_S = 600.0


def main() -> None:
    steps, prefix = Path(sys.argv[1]), sys.argv[2]
    for index in itertools.count():
        go = steps / f"{index}.go"
        deadline = time.monotonic() + WAIT_S
        while not go.exists():
            if (steps / "end").exists():
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"no go for case {index}")
            time.sleep(0.05)
        case = go.read_text()
        mlflow.set_experiment(f"{prefix}-{case}")
        with mlflow.start_run(run_name=case):
            for i in range(POINTS):
                mlflow.log_metric("x", float(i), step=i)
        (steps / f"{index}.done").touch()


if __name__ == "__main__":
    main()
