"""A small grid search that picks its best run with search_runs and trains it again."""

import mlflow

mlflow.set_experiment("best_run_search")
for lr in (0.3, 0.1, 0.03):
    with mlflow.start_run(run_name=f"lr-{lr}"):
        mlflow.log_param("lr", lr)
        mlflow.log_metric("val_loss", round(abs(lr - 0.1) + 0.2, 4))

best = mlflow.search_runs(order_by=["metrics.val_loss ASC"], max_results=1).iloc[0]
print("best run:", best["tags.mlflow.runName"], best["metrics.val_loss"])
runs = mlflow.search_runs(filter_string="metrics.val_loss < 0.35", output_format="list")
with mlflow.start_run(run_name="final"):
    mlflow.log_param("lr", best["params.lr"])
    mlflow.log_param("chosen_from", best["tags.mlflow.runName"])
    mlflow.log_metric("candidates", len(runs))
    mlflow.set_tag("best_val_loss", best["metrics.val_loss"])
