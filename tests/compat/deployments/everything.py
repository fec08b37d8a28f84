"""Everything a user does with MLflow's artifact store, logged models and the registry, in one
script (the deployment matrix runs it directly, with the import swap and zero-code): metrics,
params and tags, run artifacts, a scikit-learn and a PyTorch model, a file logged after the
models, then loading the models back, listing and downloading artifacts, registering and
searching logged models. What it read back is logged too, so reads are compared as well."""

import os
import tempfile
from pathlib import Path

import mlflow
import mlflow.pytorch
import mlflow.sklearn
import numpy as np
import torch
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

NAME = os.environ["MATRIX_NAME"]
X = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, 0.0], [3.0, 1.5], [4.0, 2.0], [5.0, 0.2]])
y = np.array([0, 0, 0, 1, 1, 1])

mlflow.set_experiment(NAME)
with mlflow.start_run(run_name="train") as run:
    mlflow.log_params({"C": 0.5, "hidden": 1})
    mlflow.set_tags({"stage": "matrix"})
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_text("first file", "notes/readme.txt")
    mlflow.log_dict({"lr": 0.1}, "config.json")
    clf = LogisticRegression(C=0.5).fit(X, y)
    sk = mlflow.sklearn.log_model(
        clf, name="sk", input_example=X[:2], registered_model_name=f"{NAME}-sk"
    )
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    example = np.zeros((1, 2), dtype=np.float32)  # the model is exported for its shape
    pt = mlflow.pytorch.log_model(net, name="torch", input_example=example)
    mlflow.log_text("logged after the models", "late/after.txt")

run_id = run.info.run_id
client = MlflowClient()
loaded = mlflow.sklearn.load_model(sk.model_uri)
net_back = mlflow.pytorch.load_model(pt.model_uri)
from_registry = mlflow.pyfunc.load_model(f"models:/{NAME}-sk/1")
listed = sorted(f.path for f in client.list_artifacts(run_id))
listed_notes = sorted(f.path for f in client.list_artifacts(run_id, "notes"))
# MLflow writes registered_model_meta into a models:/ download's directory, which is the
# artifact store itself when a client reaches the store as a local path: left out.
QUIRK = "registered_model_meta"
model_files = sorted(
    f.path for f in client.list_logged_model_artifacts(pt.model_id) if f.path != QUIRK
)
with tempfile.TemporaryDirectory() as tmp:
    one = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="notes/readme.txt", dst_path=tmp
    )
    text = Path(one).read_text()
    folder = client.download_artifacts(run_id, "late", tmp)
    late = sorted(p.name for p in Path(folder).iterdir())
    model_dir = mlflow.artifacts.download_artifacts(pt.model_uri, dst_path=f"{tmp}/model")
    model_downloaded = sorted(p.name for p in Path(model_dir).iterdir() if p.name != QUIRK)
version = mlflow.register_model(pt.model_uri, f"{NAME}-torch")
found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
inputs = torch.tensor(X[:1], dtype=torch.float32)
# At step 1: a metric at a step where the run logged models is linked to each of them, and
# MLflow keeps one of the identical points (which one depends on the order it stores them).
with mlflow.start_run(run_id=run_id):
    mlflow.log_metric("reloaded_accuracy", float(loaded.score(X, y)), step=1)
    agrees = (from_registry.predict(X) == clf.predict(X)).all()
    mlflow.log_metric("registry_agrees", float(agrees), step=1)
    mlflow.log_metric("torch_agrees", float(torch.allclose(net_back(inputs), net(inputs))), step=1)
    mlflow.log_dict(
        {
            "listed": listed,
            "listed_notes": listed_notes,
            "model_files": model_files,
            "text": text,
            "late": late,
            "model_downloaded": model_downloaded,
            "version": str(version.version),  # MLflow's SQL registry: an int; over REST: a str
            "models": sorted(m.name for m in found),
        },
        "reads.json",
    )
print("done", run_id)
