"""A nested experiment config, flattened into dotted params, plus the config files themselves."""

import mlflow

config = {
    "model": {"name": "resnet", "depth": 50, "dropout": 0.1, "blocks": [3, 4, 6, 3]},
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "data": {"root": "/data/imagenet", "augment": {"flip": True, "crop": 224}},
    "seed": 42,
}


def flatten(d, prefix=""):
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


with mlflow.start_run(run_name="config-run"):
    mlflow.log_params(flatten(config))
    # more params than one MLflow request holds (100)
    mlflow.log_params({f"layer_{i:03d}.width": 64 * (1 + i % 4) for i in range(150)})
    mlflow.log_dict(config, "config/config.yaml")
    mlflow.log_dict(config, "config/config.json")
    mlflow.log_metric("params.count", 150 + len(flatten(config)))
