"""Makes bad MLflow calls and prints, as JSON, what each raised (class, error code, message).

Run with the real ``mlflow`` (any tracking URI), or with ``--bridge`` to use
``client_sdk.mlflow`` instead; the MLflow-compatibility tests compare the outputs.
"""

from __future__ import annotations

import json
import sys
from typing import Any

if "--without-mlflow" in sys.argv:
    sys.modules["mlflow"] = None  # type: ignore[assignment]  # as if it were not installed
if "--bridge" in sys.argv:
    from client_sdk import mlflow
else:
    import mlflow

import numpy as np
import torch


def outcome(call: Any) -> list[Any]:
    try:
        result = call()
    except BaseException as exc:  # every kind is what we compare
        message = str(getattr(exc, "message", exc))
        run = mlflow.active_run()
        if run is not None:
            message = message.replace(run.info.run_id, "<run id>")
        return [type(exc).__name__, getattr(exc, "error_code", None), message]
    return ["ok", None, repr(result) if not hasattr(result, "wait") else "RunOperations"]


CALLS = {
    "log_param ok": lambda: mlflow.log_param("lr", 0.1),
    "log_param same": lambda: mlflow.log_param("lr", 0.1),
    "log_param changed": lambda: mlflow.log_param("lr", 0.2),
    "log_params changed": lambda: mlflow.log_params({"lr": 0.3, "fresh": 1}),
    "log_param bad key": lambda: mlflow.log_param("bad key!", 1),
    "log_param dotdot": lambda: mlflow.log_param("../x", 1),
    "log_param long key": lambda: mlflow.log_param("k" * 251, 1),
    "log_params bad key": lambda: mlflow.log_params({"ok": 1, "bad key!": 2}),
    "log_metric bad key": lambda: mlflow.log_metric("bad key!", 1.0),
    "log_metric dotdot": lambda: mlflow.log_metric("../x", 1.0),
    "log_metric long key": lambda: mlflow.log_metric("k" * 251, 1.0),
    "log_metric str": lambda: mlflow.log_metric("k", "abc"),
    "log_metric numeric str": lambda: mlflow.log_metric("k", "1.5"),
    "log_metric list": lambda: mlflow.log_metric("k", [1.0]),
    "log_metric None": lambda: mlflow.log_metric("k", None),
    "log_metric bool": lambda: mlflow.log_metric("k", True),
    "log_metric numpy": lambda: mlflow.log_metric("k", np.float32(1.5)),
    "log_metric array": lambda: mlflow.log_metric("k", np.array([1.0, 2.0])),
    "log_metric tensor": lambda: mlflow.log_metric("k", torch.tensor(1.5)),
    "log_metric tensor 1d": lambda: mlflow.log_metric("k", torch.tensor([1.5, 2.0])),
    "log_metric float step": lambda: mlflow.log_metric("k", 1.0, step=1.5),
    "log_metric str step": lambda: mlflow.log_metric("k", 1.0, step="a"),
    "log_metric huge step": lambda: mlflow.log_metric("k", 1.0, step=2**63),
    "log_metric negative ts": lambda: mlflow.log_metric("k", 1.0, timestamp=-5),
    "log_metric sync false": lambda: mlflow.log_metric("k", 1.0, synchronous=False),
    "log_metrics bad key": lambda: mlflow.log_metrics({"ok": 1, "bad key!": 2}),
    "log_metrics str": lambda: mlflow.log_metrics({"ok": "x"}),
    "log_metrics None": lambda: mlflow.log_metrics({"ok": None}),
    "set_tag bad key": lambda: mlflow.set_tag("bad key!", 1),
    "set_tag long key": lambda: mlflow.set_tag("k" * 251, 1),
    "set_tags bad key": lambda: mlflow.set_tags({"ok": 1, "bad key!": 2}),
    "delete_tag missing": lambda: mlflow.delete_tag("never-set"),
    "log_text absolute": lambda: mlflow.log_text("x", "/abs/a.txt"),
    "log_text dotdot": lambda: mlflow.log_text("x", "../a.txt"),
    "log_artifact missing": lambda: mlflow.log_artifact("/nonexistent/file.txt"),
    "log_artifact bad path": lambda: mlflow.log_artifact(__file__, artifact_path="/abs"),
    "log_artifacts missing": lambda: mlflow.log_artifacts("/nonexistent/dir"),
    "log_image both": lambda: mlflow.log_image(np.zeros((2, 2)), "a.png", key="k"),
    "log_image neither": lambda: mlflow.log_image(np.zeros((2, 2))),
    "log_image bad dtype": lambda: mlflow.log_image(np.zeros((2, 2), dtype=np.complex64), "a.png"),
    "log_image bad key": lambda: mlflow.log_image(np.zeros((2, 2)), key="a:b"),
    "log_table bad ext": lambda: mlflow.log_table({"a": [1]}, "t.csv"),
    "log_table bad char": lambda: mlflow.log_table({"a": [1]}, "t,x.json"),
    "log_table bad data": lambda: mlflow.log_table([1, 2], "t.json"),
    "log_figure bad": lambda: mlflow.log_figure(object(), "f.png"),
    "start_run not nested": lambda: mlflow.start_run(),  # noqa: PLW0108
    "start_run bad run id": lambda: mlflow.start_run(run_id="bad id!", nested=True),
    "start_run note twice": lambda: mlflow.start_run(
        nested=True, description="d", tags={"mlflow.note.content": "x"}
    ),
    "set_experiment neither": lambda: mlflow.set_experiment(),  # noqa: PLW0108 - bound late
}

results = {}
with mlflow.start_run(run_name="errors"):
    for label, call in CALLS.items():
        results[label] = outcome(call)
results["end_run bad status"] = outcome(lambda: mlflow.end_run("WHAT"))
print(json.dumps(results, indent=1, sort_keys=True))
