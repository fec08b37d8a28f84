"""mlflow.enable_system_metrics_logging(): the monitor samples while the run is active."""

import os
import time

import mlflow

mlflow.set_experiment(os.environ["FRAMEWORK_EXPERIMENT"])
mlflow.enable_system_metrics_logging()
mlflow.set_system_metrics_sampling_interval(1)
mlflow.set_system_metrics_samples_before_logging(1)
with mlflow.start_run(run_name="monitored") as run:
    mlflow.log_param("work", "sleep")
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        time.sleep(0.1)
print("ran", run.info.run_id)
