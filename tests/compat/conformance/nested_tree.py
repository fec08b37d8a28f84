"""A tree of runs three levels deep in the script's own experiment."""

import mlflow

mlflow.set_experiment("nested_tree")
with mlflow.start_run(run_name="study"):
    mlflow.log_param("kind", "study")
    for model in ("cnn", "mlp"):
        with mlflow.start_run(run_name=model, nested=True):
            mlflow.log_param("model", model)
            for fold in range(2):
                with mlflow.start_run(run_name=f"{model}-fold{fold}", nested=True):
                    mlflow.log_metric("score", 0.5 + fold / 10 + (model == "cnn") / 4)
