"""Train a scikit-learn classifier, log it with its signature and register it, then load it
back (by its model URI and from the registry) and log how it scores."""

import mlflow
import mlflow.sklearn
import numpy as np
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

X = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, 0.0], [3.0, 1.5], [4.0, 2.0], [5.0, 0.2]])
y = np.array([0, 0, 0, 1, 1, 1])

mlflow.set_experiment("sklearn_model")
with mlflow.start_run(run_name="logreg") as run:
    params = {"C": 0.5, "max_iter": 200}
    mlflow.log_params(params)
    model = LogisticRegression(**params).fit(X, y)
    mlflow.log_metric("train_accuracy", float(model.score(X, y)))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(X, model.predict(X)),
        input_example=X[:2],
        registered_model_name="sklearn_model-classifier",
    )
    print("logged", info.model_uri, "version", info.registered_model_version)

loaded = mlflow.sklearn.load_model(info.model_uri)
from_registry = mlflow.pyfunc.load_model("models:/sklearn_model-classifier/1")
with mlflow.start_run(run_id=run.info.run_id):
    mlflow.log_metric("reloaded_accuracy", float(loaded.score(X, y)))
    mlflow.log_metric(
        "registry_agrees", float((from_registry.predict(X) == loaded.predict(X)).all())
    )
