"""Datasets as run inputs (numpy and pandas), with contexts, and a binary stream."""

import io

import mlflow
import numpy as np
import pandas as pd

features = np.arange(12, dtype=np.float64).reshape(6, 2)
labels = np.array([0, 1, 0, 1, 0, 1])
frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})

mlflow.set_experiment("datasets")
with mlflow.start_run(run_name="with-inputs"):
    train = mlflow.data.from_numpy(features, targets=labels, name="train-xy")
    mlflow.log_input(train, context="training")
    mlflow.log_input(mlflow.data.from_pandas(frame, name="lookup"), context="eval", tags={"v": "1"})
    mlflow.log_stream(io.BytesIO(b"\x00\x01binary blob"), "blobs/blob.bin")
    mlflow.log_metric("rows", features.shape[0])
    run = mlflow.active_run()

inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
print("inputs:", sorted(i.dataset.name for i in inputs))
assert sorted(i.dataset.name for i in inputs) == ["lookup", "train-xy"]
