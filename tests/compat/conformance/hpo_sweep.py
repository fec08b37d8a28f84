"""A hyperparameter sweep: a parent run with one nested child run per trial."""

import mlflow

mlflow.set_experiment("hpo_sweep-trials")

best = None
with mlflow.start_run(run_name="sweep") as parent:
    mlflow.log_param("trials", 3)
    for trial, lr in enumerate([0.1, 0.01, 0.001]):
        with mlflow.start_run(run_name=f"trial-{trial}", nested=True):
            mlflow.log_param("lr", lr)
            loss = abs(0.01 - lr) * 10 + 0.05
            for step in range(5):
                mlflow.log_metric("loss", loss * (5 - step), step=step)
            mlflow.set_tag("trial", trial)
            if best is None or loss < best[1]:
                best = (lr, loss)
    mlflow.log_metric("best_loss", best[1])
    mlflow.log_param("best_lr", best[0])
    print(parent.info.run_name, "done")
