"""The ServerApp: FedAvg over the sites, logging the aggregated evaluation of every round (and a
central evaluation) through trackbridge, as the run ``server`` of the job."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from client_sdk import Writer
from tbflower import task
from tbflower.tracking import CLOSE_TIMEOUT_S, log_server_round

app = ServerApp()
CENTRAL_EXAMPLES = 256


class FastPollGrid:
    """The Grid, polling for replies every 0.2 s rather than Flower 1.42's fixed 3 s
    (``flwr/superlink/grid/http_grid.py``); only the Grid's public push and pull are used."""

    def __init__(self, grid: Grid, interval_s: float = 0.2) -> None:
        self._grid = grid
        self._interval_s = interval_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        waiting = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (deadline is None or time.monotonic() < deadline):
            got = list(self._grid.pull_messages(waiting))
            replies.extend(got)
            waiting.difference_update(m.metadata.reply_to_message_id for m in got)
            if waiting:
                time.sleep(self._interval_s)
        return replies


class TrackedFedAvg(FedAvg):
    """FedAvg that logs each round's aggregates (weighted by the sites' ``num-examples``)."""

    def __init__(self, writer: Writer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._writer = writer

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if metrics is not None:
            log_server_round(
                self._writer, {"fedavg/train/loss": metrics["train_loss"]}, server_round
            )
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> Any:
        replies = list(replies)
        metrics = super().aggregate_evaluate(server_round, replies)
        if metrics is not None:
            log_server_round(
                self._writer,
                {
                    "fedavg/eval/loss": metrics["eval_loss"],
                    "fedavg/eval/accuracy": metrics["eval_accuracy"],
                },
                server_round,
            )
        return metrics


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    rounds = int(config["num-server-rounds"])
    nodes = int(config["min-nodes"])
    writer = Writer(receiver=str(config["receiver"]), client_id="server", job=str(config["job"]))
    writer.start_run(run_name="server", tags={"flower.role": "server"})
    writer.log_params({"num-server-rounds": rounds, "local-epochs": config["local-epochs"]})
    x, y = task.data(partition=2, examples=CENTRAL_EXAMPLES)  # a distribution of its own

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        net = task.model()
        net.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = task.evaluate(net, x, y)
        log_server_round(writer, {"central/loss": loss, "central/accuracy": accuracy}, server_round)
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    strategy = TrackedFedAvg(
        writer,
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_available_nodes=nodes,
        min_train_nodes=nodes,
        min_evaluate_nodes=nodes,
    )
    try:
        strategy.start(
            grid=FastPollGrid(grid) if config["fast-poll"] else grid,
            initial_arrays=ArrayRecord(task.model().state_dict()),
            num_rounds=rounds,
            timeout=120,
            evaluate_fn=central,
        )
    except BaseException:
        writer.end_run("FAILED")
        raise
    finally:
        writer.close(timeout_s=CLOSE_TIMEOUT_S)
