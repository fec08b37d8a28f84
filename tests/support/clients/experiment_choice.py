"""A script that chooses its experiments, driven step by step by a test that kills the
receiver between the steps: for each case, ``set_experiment``, ``start_run``, points, end.
Before each step it writes ``DIR/<step>.reached`` and waits for ``DIR/<step>.go``.

Zero-code (``MLFLOW_TRACKING_URI=trackbridge://...``) or, with ``--swap``, the import swap.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

if "--swap" in sys.argv:
    from client_sdk import mlflow
else:
    import mlflow

CASES = ("kill-before-set", "kill-before-start", "kill-after-start")
POINTS = 200
WAIT_S = 240.0


def step(steps: Path, name: str) -> None:
    (steps / f"{name}.reached").touch()
    deadline = time.monotonic() + WAIT_S
    while not (steps / f"{name}.go").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no go for step {name}")
        time.sleep(0.05)


def main() -> None:
    steps = Path(sys.argv[1])
    prefix = sys.argv[2]
    runs = {}
    for case in CASES:
        step(steps, f"{case}.set")
        mlflow.set_experiment(f"{prefix}-{case}")
        step(steps, f"{case}.start")
        run = mlflow.start_run(run_name=case)
        step(steps, f"{case}.points")
        for i in range(POINTS):
            mlflow.log_metric("x", float(i), step=i)
        mlflow.end_run()
        runs[case] = run.info.run_id
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
