"""trackbridge in a Flower app.

A site's ClientApp runs in a new ``flwr-clientapp`` process for every message (each train and
each evaluate of each round), so it opens a Writer per message, logs, and closes it (drained)
before the handler returns: Flower ends the process right after the reply. The site's MLflow
run stays one for the whole job: the first message creates it and keeps its MLflow id in the
node's ``context.state``; later messages resume it by that id (``start_run(run_id=...)``), and
the receiver's live view continues the site's curves across the processes. A message leaves
the run RUNNING (``close(end_run=False)``); the final round's evaluation ends it.
The ServerApp lives for the whole run and keeps one Writer.

Per-round points of a site are logged with ``round=server_round`` and the site's
``num_examples`` (and at ``step=server_round``, so that MLflow's charts are by round too; a
metric with per-epoch points has its own key): a receiver started with ``--aggregate 'eval/*'``
writes their mean, min, max, count and example-weighted mean per round to the job's parent run.
The server's own aggregates (FedAvg's) are logged by step only, under ``fedavg/``: they are not
a site's points, and must not join the sites' aggregates (``eval/*`` matches ``eval/loss``, not
``fedavg/eval/loss``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from flwr.app import ConfigRecord, Context

from client_sdk import Writer

STATE_KEY = "trackbridge"
CLOSE_TIMEOUT_S = 30.0


def site_name(context: Context) -> str:
    """The site's client id: its partition, as the SuperNode was started with."""
    return f"site-{int(context.node_config['partition-id'])}"


@contextmanager
def site_run(context: Context, *, last: bool = False) -> Iterator[Writer]:
    """A Writer logging into this site's run (created by the first message, then resumed).

    The run stays RUNNING between messages (each closes its Writer without ending it), so the
    site is one run and one live curve; the ``last`` message (the final round's evaluation)
    ends it FINISHED.
    """
    site = site_name(context)
    config = context.run_config
    writer = Writer(receiver=str(config["receiver"]), client_id=site, job=str(config["job"]))
    kept = context.state.config_records.get(STATE_KEY)
    run_id = str(kept["run_id"]) if kept is not None else None
    try:
        writer.start_run(
            run_name=site,
            tags={"flower.partition_id": context.node_config["partition-id"]},
            run_id=run_id,
        )
        try:
            yield writer
        except BaseException:
            writer.end_run("FAILED")
            raise
        if run_id is None:
            new_id = writer.run_id(timeout_s=CLOSE_TIMEOUT_S)  # waits for MLflow's id
            if new_id:
                context.state[STATE_KEY] = ConfigRecord({"run_id": new_id})
        if last:
            writer.end_run("FINISHED")
    finally:
        writer.close(timeout_s=CLOSE_TIMEOUT_S, end_run=False)


def log_round(
    writer: Writer, metrics: Mapping[str, float], server_round: int, num_examples: int
) -> None:
    """One round's points of this site; ``num_examples`` is what a weighted cross-client mean
    weighs the site by."""
    with writer.federated_round(server_round, num_examples=num_examples):
        writer.log_metrics(dict(metrics), step=server_round)


def log_server_round(writer: Writer, metrics: Mapping[str, float], server_round: int) -> None:
    """The server's points of a round (its own aggregates, its central evaluation)."""
    writer.log_metrics(dict(metrics), step=server_round)
