"""Tags set, overwritten and deleted; a run ended KILLED by hand; a finished run resumed."""

import mlflow

run = mlflow.start_run(run_name="lifecycle", tags={"owner": "alice", "temp": "x"})
mlflow.set_tags({"phase": "train", "gpu": "a100", "retries": 0})
mlflow.set_tag("phase", "eval")
mlflow.delete_tag("temp")
mlflow.log_metric("score", 0.5, step=0)
mlflow.end_run(status="KILLED")

with mlflow.start_run(run_id=run.info.run_id):
    mlflow.log_metric("score", 0.75, step=1)
    mlflow.set_tag("resumed", True)

with mlflow.start_run(run_name="second") as second:
    mlflow.set_tag("note", "short-lived")
print(mlflow.last_active_run().info.run_name, second.info.run_name)
