"""Text, files and directories: temp files are deleted right after logging, as scripts do."""

import os
import tempfile

import mlflow

with mlflow.start_run(run_name="artifacts"):
    mlflow.log_text("epoch,loss\n0,1.0\n1,0.5\n", "reports/history.csv")
    mlflow.log_text("héllo wörld ✓\n", "notes.txt")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "predictions.txt")
        with open(path, "w") as f:
            f.writelines(f"{i},{i % 3}\n" for i in range(1000))
        mlflow.log_artifact(path)
        mlflow.log_artifact(path, artifact_path="outputs/eval")
        tree = os.path.join(tmp, "checkpoint")
        os.makedirs(os.path.join(tree, "shards"))
        for i in range(3):
            with open(os.path.join(tree, "shards", f"part-{i}.bin"), "wb") as f:
                f.write(bytes(range(256)) * (i + 1))
        with open(os.path.join(tree, "meta.json"), "w") as f:
            f.write('{"format": 1}')
        mlflow.log_artifacts(tree, artifact_path="ckpt")
        mlflow.log_artifact(tree)
    mlflow.log_metric("files", 9)
