"""A script that chooses its experiment, then streams points: ``set_experiment(NAME)``,
``start_run``, ``POINTS`` points of metric ``x`` as fast as it can, ``end_run``; then, with
``--wait-file``, it waits for that file before exiting (a test kills the receiver meanwhile).

Zero-code (``MLFLOW_TRACKING_URI=trackbridge://...``) or, with ``--swap``, the import swap.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if "--swap" in sys.argv:
    from client_sdk import mlflow
else:
    import mlflow  # type: ignore[no-redef]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("experiment")
    parser.add_argument("points", type=int)
    parser.add_argument("--run-name", required=True)
    parser.add_argument("--swap", action="store_true")
    parser.add_argument("--wait-file", required=True, type=Path)
    args = parser.parse_args()
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=args.run_name):
        for i in range(args.points):
            mlflow.log_metric("x", float(i), step=i)
    deadline = time.monotonic() + 600  # the sender goes on delivering meanwhile
    while not args.wait_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
