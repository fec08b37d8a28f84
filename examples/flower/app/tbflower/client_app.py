"""The ClientApp: trains and evaluates locally, logging every site's metrics through trackbridge."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from tbflower import task
from tbflower.tracking import log_round, site_run

app = ClientApp()
EXAMPLES = 96


def _local(msg: Message, context: Context):  # type: ignore[no-untyped-def]
    net = task.model()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = task.data(int(context.node_config["partition-id"]), EXAMPLES)
    return net, x, y, int(msg.content["config"]["server-round"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    net, x, y, server_round = _local(msg, context)
    epochs = int(context.run_config["local-epochs"])
    with site_run(context) as writer:
        losses = task.train(net, x, y, epochs)
        for epoch, loss in enumerate(losses):  # local epochs: a step of their own
            writer.log_metric("train/epoch_loss", loss, step=(server_round - 1) * epochs + epoch)
        log_round(writer, {"train/loss": losses[-1]}, server_round, len(y))
    metrics = MetricRecord({"train_loss": losses[-1], "num-examples": len(y)})
    content = RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    net, x, y, server_round = _local(msg, context)
    loss, accuracy = task.evaluate(net, x, y)
    last = server_round >= int(context.run_config["num-server-rounds"])
    with site_run(context, last=last) as writer:
        log_round(writer, {"eval/loss": loss, "eval/accuracy": accuracy}, server_round, len(y))
    metrics = MetricRecord({"eval_loss": loss, "eval_accuracy": accuracy, "num-examples": len(y)})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
