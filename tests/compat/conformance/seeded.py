"""A seeded script: its random values (Python's and numpy's) must be what they are without
tracking, whatever names the runs get."""

import random

import mlflow
import numpy as np

random.seed(1234)
np.random.seed(1234)

mlflow.set_experiment("seeded")
for _trial in range(3):
    with mlflow.start_run():  # unnamed: MLflow picks the name
        lr = random.choice([0.1, 0.01, 0.001])
        noise = float(np.random.normal())
        mlflow.log_param("lr", lr)
        mlflow.log_metric("noise", noise)
        mlflow.log_metric("draw", random.random())
print("last draw", random.random())
