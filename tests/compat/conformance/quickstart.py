"""MLflow quickstart style: no start_run, the first call starts a run; it ends at exit."""

import mlflow

alpha, l1_ratio = 0.5, 0.1
mlflow.log_param("alpha", alpha)
mlflow.log_param("l1_ratio", l1_ratio)

rmse = 1.0
for epoch in range(10):
    rmse *= 0.9
    mlflow.log_metric("rmse", rmse, step=epoch)
mlflow.log_metric("r2", 0.71)
mlflow.set_tag("model", "ElasticNet")
print("logged", mlflow.active_run().info.run_name is not None)
