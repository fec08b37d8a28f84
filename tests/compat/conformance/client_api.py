"""MlflowClient the way scripts use it: experiments, runs, batches, tags, terminate, delete."""

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

client = MlflowClient()
exp_id = client.create_experiment("client_api", tags={"team": "vision"})
run = client.create_run(exp_id, run_name="manual", tags={"source": "client"})
run_id = run.info.run_id
client.log_param(run_id, "lr", 0.01)
client.log_batch(
    run_id,
    metrics=[Metric("acc", 0.5 + i / 10, 1_700_000_900_000 + i, i) for i in range(4)],
    params=[Param("batch", "32")],
    tags=[RunTag("stage", "train")],
)
client.set_tag(run_id, "stage", "eval")
client.log_metric(run_id, "loss", 0.25, timestamp=1_700_000_900_100, step=7)
client.log_text(run_id, "evaluated", "eval/notes.txt")
client.log_dict(run_id, {"layers": [2, 4, 1]}, "config.json")
client.set_terminated(run_id, "FINISHED")

scratch = client.create_run(exp_id, run_name="scratch")
client.log_metric(scratch.info.run_id, "loss", 9.0)
client.delete_run(scratch.info.run_id)
kept = client.create_run(exp_id, run_name="deleted-then-restored")
client.delete_run(kept.info.run_id)
client.restore_run(kept.info.run_id)
client.set_terminated(kept.info.run_id, "KILLED")

assert client.get_run(run_id).data.params == {"lr": "0.01", "batch": "32"}
assert [m.value for m in client.get_metric_history(run_id, "acc")] == [0.5, 0.6, 0.7, 0.8]
names = sorted(r.info.run_name for r in client.search_runs([exp_id]))
print("active runs:", names)
assert names == ["deleted-then-restored", "manual"], names
assert client.get_experiment_by_name("client_api").tags["team"] == "vision"
print("artifacts:", [f.path for f in client.list_artifacts(run_id)])
