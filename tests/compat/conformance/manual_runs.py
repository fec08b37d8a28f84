"""Runs started and ended by hand, logging to a run by id, generated run names."""

import mlflow

first = mlflow.start_run()
mlflow.log_param("kind", "first")
mlflow.log_metric("x", 1.0, step=0)
first_id = first.info.run_id
mlflow.end_run()

second = mlflow.start_run()
mlflow.log_param("kind", "second")
mlflow.log_metric("x", 2.0, step=0)
# late evaluation results go to the first run, by its id
mlflow.log_metric("eval", 0.9, run_id=first_id)
mlflow.log_metrics({"eval2": 0.8}, step=1, run_id=first_id)
mlflow.log_params({"late": "yes"}, run_id=first_id)
mlflow.end_run(status="FINISHED")

print(mlflow.active_run() is None, first.info.run_name != second.info.run_name)
