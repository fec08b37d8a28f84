"""A run that crashes: it ends FAILED and the error reaches the caller (exit status 1)."""

import mlflow

with mlflow.start_run(run_name="warmup"):
    mlflow.log_metric("loss", 1.0, step=0)

with mlflow.start_run(run_name="diverged"):
    mlflow.log_param("lr", 10.0)
    for step in range(5):
        mlflow.log_metric("loss", 10.0**step, step=step)
    raise FloatingPointError("loss diverged")
