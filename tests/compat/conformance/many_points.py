"""A long loop: 10,000 metric points, each with its own step and timestamp."""

import math

import mlflow

T0 = 1_700_000_100_000

with mlflow.start_run(run_name="long-training"):
    mlflow.log_param("steps", 5000)
    for step in range(5000):
        mlflow.log_metric("loss", math.exp(-step / 1000), step=step, timestamp=T0 + 10 * step)
        mlflow.log_metric("grad_norm", 1.0 + math.sin(step), step=step, timestamp=T0 + 10 * step)
