"""A receiver's publish budget paces its clients (server/ingest/pacing.py): each publish ack
advises a linger of (runs publishing) / ``--publish-budget``, so a small budget makes a
client's publishes coalesce into fewer calls, each carrying more points, where a big one lets
each point go at once. A real receiver (port 0), a real writer, the real MLflow server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
from tests.support.faults import metric_points
from tests.support.procs import ReceiverProcess, wait_until

_POINTS = 3
_PATIENCE_S = 5.0
"""How long a paced writer's point is given to be acked on its own (it must not be: its linger
is 50 s, so nothing but the closing flush sends it; a longer wait proves no more)."""


def _publish_points(
    address: str, job: str, client_id: str, *, paced: bool
) -> tuple[int, int, float, str]:
    """Logs a first point (flushed: its ack carries the receiver's advice), then ``_POINTS``
    more, then flushes. After each point a paced writer is given ``_PATIENCE_S`` to send it
    (it does not); an unpaced one is waited for until it has (a short linger sends it in ms,
    however long that takes on a busy machine). Returns the calls made after the first, the
    events they carried, the writer's linger and the run id."""
    config = WriterConfig.resolve(address, client_id, job).overridden(
        linger_s=120.0, min_linger_s=0.001
    )
    writer = Writer(config=config)
    try:
        writer.log_metric("x", 0.0, step=0)
        assert writer.flush(30), "the first point was not acked"
        stats = writer._sender.stats
        calls, events = stats.batches_sent, stats.events_acked
        for step in range(1, _POINTS + 1):
            writer.log_metric("x", float(step), step=step)
            if not paced:
                wait_until(lambda: writer.pending_events == 0, 60, what="the point's own ack")
                continue
            # Still lingering after that is what a paced writer does: the counts below say
            # whether a point went on its own.
            with contextlib.suppress(AssertionError):
                wait_until(lambda: writer.pending_events == 0, _PATIENCE_S, what="the point's ack")
        assert writer.flush(30), "the points were not acked"
        run_id = writer.run_id(timeout_s=30)
        linger_s = writer._sender.linger.seconds
        return stats.batches_sent - calls, stats.events_acked - events, linger_s, run_id
    finally:
        writer.close(timeout_s=10)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_small_publish_budget_makes_a_clients_publishes_coalesce(
    start_receiver: Callable[..., ReceiverProcess], job: str, mlflow_client: Any
) -> None:
    # One run publishing: 0.02 calls/s advises 50 s (the writer waits up to 120 s), far
    # longer than the points take to log; ten million calls/s advises next to nothing.
    tight = start_receiver(extra_args=("--publish-budget", "0.02"))
    roomy = start_receiver(extra_args=("--publish-budget", "10000000"))

    tight_calls, tight_events, tight_linger_s, tight_run = _publish_points(
        tight.address, f"{job}-tight", "paced", paced=True
    )
    roomy_calls, roomy_events, _, roomy_run = _publish_points(
        roomy.address, f"{job}-roomy", "unpaced", paced=False
    )

    assert tight_linger_s == pytest.approx(1 / 0.02)  # the advice, within the writer's bound
    assert (tight_calls, tight_events) == (1, _POINTS)  # every point in the closing call
    assert (roomy_calls, roomy_events) == (_POINTS, _POINTS)  # a call per point
    want = [(float(i), i) for i in range(_POINTS + 1)]
    for run_id in (tight_run, roomy_run):
        wait_until(
            lambda run_id=run_id: len(mlflow_client.get_metric_history(run_id, "x")) > _POINTS,
            60,
            what="every point in MLflow",
        )
        assert [(v, s) for v, s, _ in metric_points(mlflow_client, run_id, "x")] == want


@pytest.mark.slow
def test_a_fast_logger_sends_each_full_batch_without_waiting_for_its_linger(
    receiver: ReceiverProcess, job: str
) -> None:
    """Past a batch's worth of buffered points, each log call asks the sender for a send now
    (only if it has not been asked already: client_sdk/_sender.py ``wake``). No ask is lost:
    with a ten-minute linger, every full batch goes while the loop runs, and what is left
    unsent is less than a batch (it waits for its linger, or a flush)."""
    config = WriterConfig.resolve(receiver.address, "fast-logger", job).overridden(
        linger_s=600.0, min_linger_s=600.0, max_batch_events=100
    )
    writer = Writer(config=config)
    try:
        for step in range(20_000):
            writer.log_metric("x", float(step), step=step)
        wait_until(lambda: writer.pending_events < 100, 120, what="every full batch sent")
        assert writer._sender.stats.events_acked > 19_900
    finally:
        writer.close(30)
