"""scikit-learn autologging: params, training metrics, the fitted model and its dataset."""

import mlflow
import mlflow.sklearn
import numpy as np
from sklearn.linear_model import LinearRegression

mlflow.set_experiment("sklearn_autolog")
mlflow.sklearn.autolog(log_input_examples=False, silent=True)
X = np.array([[1.0, 1.0], [1.0, 2.0], [2.0, 2.0], [2.0, 3.0]])
y = X @ np.array([1.0, 2.0]) + 3.0
with mlflow.start_run(run_name="autolog"):
    LinearRegression().fit(X, y)
mlflow.sklearn.autolog(disable=True)
