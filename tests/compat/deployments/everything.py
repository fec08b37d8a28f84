"""Everything a user does with MLflow's artifact store, logged models and the registry, in one
script (the deployment matrix runs it directly, with the import swap and zero-code): metrics,
params and tags, run artifacts (a folder, a table, an image), a scikit-learn model with its
signature and a PyTorch model (and its state dict), a file logged after the models, then loading
the models back (by their URIs, from the registry, by alias), loading the table, listing and
downloading artifacts, registering and searching logged models, registry aliases, tags and
searches. What it read back is logged too, so reads are compared as well. (The conformance
scripts leave logged models to this one.)

With ``MATRIX_FRAMEWORKS=1`` (the default deployment) it goes on with ``mlflow.models.evaluate``
of the scikit-learn model and Lightning under ``mlflow.pytorch.autolog``: MLflow's own code
logging and loading models, through the same artifact calls as the part above (a model logged,
files logged, a model downloaded), so one deployment runs them.

Not here: a transformers ``Trainer`` under autolog. Importing it costs ~15 s a process on a
loaded 2-core box (13 processes per matrix run), and the callback logs wall-clock figures
(``train_runtime``, samples per second) that no two runs share."""

import os
import tempfile
from pathlib import Path

import mlflow
import mlflow.pytorch
import mlflow.sklearn
import numpy as np
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression

NAME = os.environ["MATRIX_NAME"]
ALIAS = "champion"
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
        clf,
        name="sk",
        signature=infer_signature(X, clf.predict(X)),
        input_example=X[:2],
        pip_requirements=["scikit-learn"],  # as given, not inferred in a subprocess
        registered_model_name=f"{NAME}-sk",
    )
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    example = np.zeros((1, 2), dtype=np.float32)  # the model is exported for its shape
    pt = mlflow.pytorch.log_model(
        net, name="torch", input_example=example, pip_requirements=["torch"]
    )
    mlflow.pytorch.log_state_dict(net.state_dict(), artifact_path="state_dict")
    mlflow.log_text("logged after the models", "late/after.txt")
    with tempfile.TemporaryDirectory() as folder:  # a folder, a table and an image
        (Path(folder) / "sub").mkdir()
        (Path(folder) / "a.txt").write_text("a")
        (Path(folder) / "sub" / "b.txt").write_text("b")
        mlflow.log_artifacts(folder, "folder")
    mlflow.log_table({"x": [1, 2, 3], "label": ["a", "b", "c"]}, "tables/t.json")
    mlflow.log_image(np.arange(48, dtype=np.uint8).reshape(4, 4, 3), "images/i.png")

run_id = run.info.run_id
client = MlflowClient()
loaded = mlflow.sklearn.load_model(sk.model_uri)
net_back = mlflow.pytorch.load_model(pt.model_uri)
from_registry = mlflow.pyfunc.load_model(f"models:/{NAME}-sk/1")
listed = sorted(f.path for f in client.list_artifacts(run_id))
table = mlflow.load_table("tables/t.json", run_ids=[run_id])
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
client.set_registered_model_alias(f"{NAME}-sk", ALIAS, "1")
by_alias = client.get_model_version_by_alias(f"{NAME}-sk", ALIAS)
aliased = mlflow.pyfunc.load_model(f"models:/{NAME}-sk@{ALIAS}")
aliases = client.get_registered_model(f"{NAME}-sk").aliases
client.set_registered_model_tag(f"{NAME}-sk", "team", "matrix")
client.set_model_version_tag(f"{NAME}-sk", "1", "validated", "yes")
versions = client.search_model_versions(f"name = '{NAME}-sk'")
registered = client.search_registered_models(filter_string=f"name LIKE '{NAME}-%'")
version_tags = client.get_model_version(f"{NAME}-sk", "1").tags
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
            "table": table.to_dict(orient="list"),
            "model_downloaded": model_downloaded,
            "version": str(version.version),  # MLflow's SQL registry: an int; over REST: a str
            "models": sorted(m.name for m in found),
            "alias_version": str(by_alias.version),
            "alias_source_is_model": by_alias.source.endswith(sk.model_id),
            "aliases": {k: str(v) for k, v in aliases.items()},
            "alias_agrees": bool((aliased.predict(X) == clf.predict(X)).all()),
            "versions": sorted(str(v.version) for v in versions),
            "registered": sorted(m.name.removeprefix(NAME) for m in registered),
            "registered_tags": {
                m.name.removeprefix(NAME): dict(sorted(m.tags.items())) for m in registered
            },
            "version_tags": dict(sorted(version_tags.items())),
        },
        "reads.json",
    )

if os.environ.get("MATRIX_FRAMEWORKS") != "1":
    print("done", run_id)
    raise SystemExit(0)

# mlflow.models.evaluate: loads the logged model back, logs metrics (to the run and the model),
# plots and the evaluation dataset.
with mlflow.start_run(run_name="evaluate"):
    evaluated = mlflow.models.evaluate(
        sk.model_uri, X, targets=y, model_type="classifier", evaluators=["default"]
    )
    mlflow.log_dict({"accuracy": evaluated.metrics["accuracy_score"]}, "evaluated.json")
run_id_eval = mlflow.last_active_run().info.run_id
eval_metrics = sorted(client.get_run(run_id_eval).data.metrics)
eval_model_metrics = sorted(m.key for m in client.get_logged_model(sk.model_id).metrics or [])

# Lightning under mlflow.pytorch.autolog: params, epoch metrics, the model summary, checkpoints
# and the model, logged by MLflow itself while the Trainer runs.
import lightning  # noqa: E402 - only this part needs it


class Tiny(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        inputs, target = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs).squeeze(-1), target)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
data = torch.utils.data.TensorDataset(
    torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
)
mlflow.pytorch.autolog(checkpoint_monitor="train_loss")  # checkpoints too
with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name="lightning") as lit_run:
    trainer = lightning.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp,
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=3))
mlflow.pytorch.autolog(disable=True)
lit_models = mlflow.search_logged_models(
    filter_string=f"source_run_id = '{lit_run.info.run_id}'", output_format="list"
)
lit_back = mlflow.pytorch.load_model(lit_models[0].model_uri) if lit_models else None

with mlflow.start_run(run_id=run_id):
    mlflow.log_dict(
        {
            "eval_metrics": eval_metrics,
            "eval_model_metrics": eval_model_metrics,
            "lightning_models": len(lit_models),
            "lightning_loaded": type(lit_back).__name__,
        },
        "reads2.json",
    )
print("done", run_id)
