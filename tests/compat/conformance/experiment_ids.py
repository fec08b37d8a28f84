"""Experiments made elsewhere, addressed by their MLflow ids."""

import mlflow
from mlflow import MlflowClient

client = MlflowClient()
existing = client.create_experiment("experiment_ids-existing")
other = mlflow.create_experiment("experiment_ids-other")

with mlflow.start_run(experiment_id=existing, run_name="by-id"):
    mlflow.log_metric("m", 1.0)

mlflow.set_experiment(experiment_id=other)
with mlflow.start_run(run_name="after-set-by-id") as run:
    mlflow.log_param("where", "other")
    assert run.info.experiment_id == other

made = client.create_run(existing, run_name="client-run")
client.log_metric(made.info.run_id, "m", 2.0)
client.set_terminated(made.info.run_id)
print(client.get_experiment(existing).name, mlflow.get_experiment(other).name)
