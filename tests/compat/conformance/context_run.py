"""A context-managed run: params, stepped metrics with dotted and slashed keys, explicit times."""

import mlflow

T0 = 1_700_000_000_000

params = {"lr": 0.001, "batch_size": 64, "optimizer": "adam", "epochs": 3}
with mlflow.start_run(
    run_name="baseline", tags={"team": "vision", "stage": "dev"}, description="first try"
) as run:
    mlflow.log_params(params)
    step = 0
    for epoch in range(params["epochs"]):
        for batch in range(20):
            loss = 2.0 / (1 + step) + 0.01 * (batch % 3)
            mlflow.log_metric("train.loss", loss, step=step, timestamp=T0 + step)
            mlflow.log_metric("train/lr", params["lr"] * 0.9**epoch, step=step, timestamp=T0 + step)
            step += 1
        mlflow.log_metrics(
            {"val.loss": 1.0 / (epoch + 1), "val.acc": 0.5 + 0.1 * epoch},
            step=epoch,
            timestamp=T0 + 10_000 + epoch,
        )
    mlflow.set_tag("best_epoch", 2)
    print("run", run.info.run_name, run.info.status)
print("after", run.info.status)
