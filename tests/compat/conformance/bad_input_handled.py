"""A defensive script: bad calls are caught, and what MLflow said about them is recorded."""

import mlflow

with mlflow.start_run(run_name="careful"):
    mlflow.log_param("lr", 0.1)
    attempts = {
        "bad_key": lambda: mlflow.log_metric("bad key!", 1.0),
        "dotdot": lambda: mlflow.log_param("../escape", 1),
        "changed": lambda: mlflow.log_param("lr", 0.2),
        "changed_batch": lambda: mlflow.log_params({"lr": 0.3, "new": 1}),
        "long_key": lambda: mlflow.set_tag("k" * 300, "v"),
        "missing_tag": lambda: mlflow.delete_tag("never-set"),
        "bad_tags": lambda: mlflow.set_tags({"ok": 1, "bad/../x": 2}),
        "neg_ts": lambda: mlflow.log_metric("m", 1.0, timestamp=-5),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
        except mlflow.exceptions.MlflowException as exc:
            mlflow.set_tag(f"error.{name}", exc.error_code)
            message = exc.message.replace(mlflow.active_run().info.run_id, "<run id>")
            mlflow.log_text(message, f"errors/{name}.txt")
    for name, attempt in {
        "str_value": lambda: mlflow.log_metric("m", "abc"),
        "float_step": lambda: mlflow.log_metric("m", 1.0, step=1.5),
        "list_value": lambda: mlflow.log_metric("m", [1.0]),
    }.items():
        try:
            attempt()
        except (TypeError, ValueError) as exc:
            mlflow.set_tag(f"error.{name}", f"{type(exc).__name__}: {exc}")
    mlflow.log_metric("good", 1.0)
