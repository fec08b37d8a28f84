"""Metric values of every kind scripts log: numpy scalars, NaN and infinities, ints, bools."""

import mlflow
import numpy as np

T0 = 1_700_000_200_000

with mlflow.start_run(run_name="values"):
    mlflow.log_metric("np_float32", np.float32(0.1), step=1, timestamp=T0)
    mlflow.log_metric("np_float64", np.float64(2.5), step=1, timestamp=T0)
    mlflow.log_metric("np_int", np.int64(7), step=np.int64(2), timestamp=T0)
    mlflow.log_metric("np_array0d", np.array(3.25), step=3, timestamp=T0)
    mlflow.log_metric("python_int", 3, step=4, timestamp=T0)
    mlflow.log_metric("flag", True, step=5, timestamp=T0)
    mlflow.log_metric("nan", float("nan"), step=6, timestamp=T0)
    mlflow.log_metric("pos_inf", float("inf"), step=7, timestamp=T0)
    mlflow.log_metric("neg_inf", -float("inf"), step=8, timestamp=T0)
    mlflow.log_metric("negative_step", -1.5, step=-3, timestamp=T0)
    mlflow.log_metric("big_step", 1.0, step=2**40, timestamp=T0)
    mlflow.log_metric("tiny", 5e-324, step=9, timestamp=T0)
    mlflow.log_metric("numeric_string", "1.5", step=10, timestamp=T0)
    mlflow.log_metrics({"a": 1, "b": np.float16(0.5)}, step=11, timestamp=T0)
    ops = mlflow.log_metrics({"async_a": 2.0}, step=12, timestamp=T0, synchronous=False)
    ops.wait()
    for step in range(3):  # the same point twice is stored once
        mlflow.log_metric("repeat", 1.0, step=step, timestamp=T0)
        mlflow.log_metric("repeat", 1.0, step=step, timestamp=T0)
