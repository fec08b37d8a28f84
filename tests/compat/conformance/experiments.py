"""Several experiments: set by name, created explicitly and addressed by id."""

import mlflow

mlflow.set_experiment("experiments-a")
with mlflow.start_run(run_name="in-a"):
    mlflow.log_metric("m", 1.0)

exp_b = mlflow.set_experiment("experiments-b")
for i in range(2):
    with mlflow.start_run(run_name="in-b"):
        mlflow.log_param("i", i)
        mlflow.log_metric("m", 2.0 + i)

exp_c = mlflow.create_experiment("experiments-c")
with mlflow.start_run(experiment_id=exp_c, run_name="in-c"):
    mlflow.log_metric("m", 3.0)

with mlflow.start_run(experiment_id=exp_b.experiment_id, run_name="back-in-b"):
    mlflow.set_tag("active_name", mlflow.active_run().info.run_name)
print(mlflow.last_active_run().info.run_name)
