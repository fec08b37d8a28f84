"""A zero-code (or, with --swap, import-swap) client for read tests: ``log RUN_NAME`` logs one
run with a metric in its job's experiment; ``read RUN_ID...`` prints (JSON) what MLflow's
reads answer through the receiver; ``rename`` creates a run, then ends and renames it in one
``update_run``. Configured by the environment (TRACKBRIDGE_*, MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import json
import sys
from typing import Any

if "--swap" in sys.argv:
    from client_sdk import mlflow
else:
    import mlflow
from mlflow.exceptions import MlflowException


def _read(run_ids: list[str]) -> dict[str, Any]:
    client = mlflow.MlflowClient()
    experiments = client.search_experiments()
    default = client.get_experiment_by_name("Default")
    runs: dict[str, Any] = {}
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
            history = client.get_metric_history(run_id, "m")
            runs[run_id] = [run.info.run_name, [h.value for h in history]]
        except MlflowException as exc:
            runs[run_id] = exc.error_code
    ids = [e.experiment_id for e in experiments]
    return {
        "experiments": sorted(e.name for e in experiments),
        "default": [default.experiment_id, default.name] if default else None,
        "searched": sorted(r.info.run_name for r in client.search_runs(ids, max_results=1000)),
        "runs": runs,
    }


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--swap"]
    if args[0] == "log":
        with mlflow.start_run(run_name=args[1]) as run:
            mlflow.log_metric("m", 1.5)
        print(json.dumps({"run_id": run.info.run_id}))
    elif args[0] == "read":
        print(json.dumps(_read(args[1:])))
    elif args[0] == "rename":
        client = mlflow.MlflowClient()
        experiment_id = client.get_experiment_by_name(args[1]).experiment_id
        run = client.create_run(experiment_id, run_name="before")
        client.update_run(run.info.run_id, "FINISHED", "after")
        print(json.dumps({"run_id": run.info.run_id}))
        mlflow.flush() if hasattr(mlflow, "flush") else None


if __name__ == "__main__":
    main()
