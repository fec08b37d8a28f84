"""Pure logic of rounds and aggregates: the call-site checks, the wire form, the log_batch
chunks with the round metric, the statistics and the aggregate queue state (a SQLite file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.convert import event_from_proto, event_to_proto
from bridge.errors import MlflowException
from bridge.events import Metric
from bridge.limits import MAX_METRICS_PER_BATCH, ROUND_METRIC, split_log_batch
from bridge.pb.v1 import events_pb2
from client_sdk._rounds import RoundScope, resolve, with_default
from server.aggregate.aggregator import Aggregator, statistics
from server.aggregate.config import AggregateConfig
from server.queue import aggregates as table
from server.queue.schema import connect


@pytest.mark.parametrize("bad", [0, -1, 1.0, True, "2", 2**63])
def test_a_round_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(MlflowException, match="must be a positive integer") as info:
        resolve(bad, None, None)  # type: ignore[arg-type]
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException, match="num_examples"):
        resolve(1, bad, None)  # type: ignore[arg-type]
    with pytest.raises(MlflowException, match="round"), RoundScope().block(bad):  # type: ignore[arg-type]
        pass


def test_blocks_nest_and_a_call_names_its_own_round() -> None:
    scope = RoundScope()
    with scope.block(3, num_examples=600):
        assert resolve(None, None, scope.current) == (3, 600)
        with scope.block(4):
            assert resolve(None, None, scope.current) == (4, 0)
            assert resolve(9, None, scope.current) == (9, 0)
        assert resolve(None, 5, scope.current) == (3, 5)
        assert with_default(Metric("k", 1.0, 0, 0), scope.current) == Metric("k", 1.0, 0, 0, 3, 600)
        assert with_default(Metric("k", 1.0, 0, 0, 7), scope.current).round == 7
    assert scope.current is None
    assert resolve(None, None, None) == (0, 0)


def test_round_and_num_examples_travel_on_the_wire() -> None:
    out = events_pb2.Event()
    event_to_proto(Metric("eval/acc", 0.5, 3, 1000, 2, 640), out)
    assert (out.metric.round, out.metric.num_examples) == (2, 640)
    assert event_from_proto(out) == Metric("eval/acc", 0.5, 3, 1000, 2, 640)
    plain = events_pb2.Event()
    event_to_proto(Metric("x", 1.0, 0, 0), plain)
    assert (
        plain.ByteSize()
        == events_pb2.Event(metric=events_pb2.Metric(key="x", value=1.0)).ByteSize()
    )


def test_each_round_point_brings_the_round_metric_in_its_chunk() -> None:
    points = [Metric("a", float(i), i // 2, 100 + i // 2, 1 + i // 4) for i in range(8)]
    (chunk,) = split_log_batch(points, round_key=ROUND_METRIC)
    rounds = [(m.step, m.timestamp_ms, m.value) for m in chunk.metrics if m.key == ROUND_METRIC]
    assert rounds == [(0, 100, 1.0), (1, 101, 1.0), (2, 102, 2.0), (3, 103, 2.0)]
    assert chunk.entries == 8
    many = [Metric("a", 1.0, i, i, 1) for i in range(MAX_METRICS_PER_BATCH)]
    chunks = list(split_log_batch(many, round_key=ROUND_METRIC, reserve_tags=1))
    assert all(len(c.metrics) <= MAX_METRICS_PER_BATCH for c in chunks)
    assert sum(c.entries for c in chunks) == MAX_METRICS_PER_BATCH
    assert [m.key for m in next(iter(split_log_batch(many[:2]))).metrics] == [
        "a",
        "a",
    ]  # no round_key


def test_statistics_are_numpys_over_the_clients_in_order() -> None:
    pts = [("b", 0.3, 10), ("a", 0.1, 30), ("c", 0.7, 0)]
    stats = statistics(pts)
    values = np.array([0.3, 0.1, 0.7])
    assert stats == {
        "mean": float(np.mean(values)),
        "min": 0.1,
        "max": 0.7,
        "count": 3.0,
    }  # a point without num_examples: no weighted mean
    assert statistics([("a", 1.0, 1), ("b", 3.0, 3)])["weighted_mean"] == 2.5


def _stored(conn: object) -> list[tuple[str, list[tuple[str, float, int]]]]:
    rows = conn.execute("SELECT run_key, payload FROM batches ORDER BY id").fetchall()  # type: ignore[attr-defined]
    out = []
    for run_key, payload in rows:
        msg = events_pb2.EventBatch.FromString(payload)
        out.append((run_key, [(e.metric.key, e.metric.value, e.metric.step) for e in msg.events]))
    return out


def test_the_aggregator_waits_for_open_runs_then_the_deadline(tmp_path: Path) -> None:
    conn = connect(tmp_path / "queue.db")
    now = [1_000_000]
    stored: list[tuple[str, int]] = []
    agg = Aggregator(
        conn,
        AggregateConfig(("eval/*",), deadline_s=2.0),
        on_stored=lambda k, n: stored.append((k, n)),
        clock_ms=lambda: now[0],
    )

    def batch(client: str, *events: events_pb2.Event) -> tuple[str, events_pb2.EventBatch, int]:
        msg = events_pb2.EventBatch(client_id=client, job="j", run_key="r", first_seq=1)
        msg.events.extend(events)
        return (f"{client}/r", msg, 1)

    def point(key: str, value: float, round_: int) -> events_pb2.Event:
        return events_pb2.Event(metric=events_pb2.Metric(key=key, value=value, round=round_))

    start = events_pb2.Event(run_start=events_pb2.RunStart())

    def ingest(*stored_batches: tuple[str, events_pb2.EventBatch, int]) -> None:
        seen = agg.observe(list(stored_batches))
        with table.transaction(conn):
            agg.record(conn, seen)

    ingest(batch("a", start, point("eval/x", 1.0, 1), point("train/x", 5.0, 1)), batch("b", start))
    assert agg.write_due() == 0  # b's run is open: wait for it
    assert table.open_clients(conn, "j") == {"a", "b"}
    conn.execute(
        "INSERT INTO runs (run_key, client_id, job, status) VALUES ('b/r', 'b', 'j', 'KILLED')"
    )
    assert table.open_clients(conn, "j") == {"a"}  # its lease ran out: not waited for
    conn.execute("UPDATE runs SET status = 'RUNNING' WHERE run_key = 'b/r'")
    assert agg.write_due() == 0
    now[0] += 2000
    assert agg.write_due() == 1  # the deadline
    assert _stored(conn) == [
        ("/aggregates:j", [("eval/x/mean", 1.0, 1), ("eval/x/min", 1.0, 1), ("eval/x/max", 1.0, 1),
                           ("eval/x/count", 1.0, 1)]),
    ]  # fmt: skip
    now[0] += 500
    ingest(batch("b", point("eval/x", float("nan"), 1)))
    assert agg.write_due() == 0  # late: recorded, never a second aggregate at the same round
    arrivals = conn.execute(
        "SELECT client_id, arrived_ms - 1000000, late, value FROM agg_arrivals ORDER BY client_id"
    ).fetchall()
    assert arrivals == [("a", 0, 0, 1.0), ("b", 2500, 1, None)]  # NaN is stored as NULL
    assert stored == [("/aggregates:j", 4)]
    seqs = conn.execute("SELECT first_seq, last_seq FROM batches ORDER BY id").fetchall()
    assert seqs == [(1, 4)]
    # Round 2: a took part in round 1, so it is waited for even with no run open (a Flower
    # site between two messages' processes); a client whose run failed is not.
    ingest(batch("a", events_pb2.Event(run_end=events_pb2.RunEnd())))
    ingest(batch("b", point("eval/x", 3.0, 2)))
    assert agg.write_due() == 0
    ingest(batch("a", point("eval/x", 5.0, 2)))
    assert agg.write_due() == 1
    assert _stored(conn)[1][1][3] == ("eval/x/count", 2.0, 2)
    conn.execute("UPDATE runs SET status = 'FAILED' WHERE run_key = 'b/r'")
    ingest(batch("b", events_pb2.Event(run_end=events_pb2.RunEnd())))
    ingest(batch("a", point("eval/x", 6.0, 3)))
    assert agg.write_due() == 1  # b failed: not waited for


def test_the_writer_checks_rounds_at_the_call_and_buffers_nothing_bad() -> None:
    from client_sdk.config import WriterConfig
    from client_sdk.writer import Writer

    # The sender takes nothing from the buffer before its first linger ends (only a full batch
    # wakes it sooner): with an hour's linger the buffer holds every call's item to be read.
    config = WriterConfig.resolve("127.0.0.1:1", "site-a", "j").overridden(linger_s=3600.0)
    writer = Writer(config=config)  # never connects: nothing valid is logged
    try:
        run = writer.start_run()
        for bad in (0, -3, 2.0, True):
            with pytest.raises(MlflowException, match="round"):
                writer.log_metric("x", 1.0, round=bad)  # type: ignore[arg-type]
            with pytest.raises(MlflowException, match="num_examples"):
                writer.log_metrics({"x": 1.0}, round=1, num_examples=bad)  # type: ignore[arg-type]
            with pytest.raises(MlflowException, match="round"), writer.federated_round(bad):  # type: ignore[arg-type]
                pass
        with writer.federated_round(2, num_examples=50):
            writer.log_metric("x", 1.0, step=3, timestamp=7)
            writer.log_metric("y", 2.0, step=3, timestamp=7, round=5)
            writer.log_metrics({"z": 3.0}, step=4, timestamp=8)
        writer.log_metric("w", 4.0, step=1, timestamp=9)
        items = list(writer._buffer)
        assert items[1:] == [
            (run.run_key, "x", 1.0, 3, 7, 2, 50),
            (run.run_key, "y", 2.0, 3, 7, 5, 0),
            (run.run_key, Metric("z", 3.0, 4, 8, 2, 50)),
            (run.run_key, "w", 4.0, 1, 9),  # no round: the hot path's 5-tuple
        ]
    finally:
        writer.close(timeout_s=0.5)


def test_a_run_that_never_logs_a_key_holds_back_only_its_first_round(tmp_path: Path) -> None:
    conn = connect(tmp_path / "queue.db")
    now = [1_000_000]
    config = AggregateConfig(("eval/*",), deadline_s=2.0)
    agg = Aggregator(conn, config, on_stored=lambda k, n: None, clock_ms=lambda: now[0])

    def ingest(client: str, *events: events_pb2.Event) -> None:
        msg = events_pb2.EventBatch(client_id=client, job="j", run_key="r", first_seq=1)
        msg.events.extend(events)
        seen = agg.observe([(f"{client}/r", msg, 1)])
        with table.transaction(conn):
            agg.record(conn, seen)

    def point(value: float, round_: int) -> events_pb2.Event:
        return events_pb2.Event(metric=events_pb2.Metric(key="eval/x", value=value, round=round_))

    start = events_pb2.Event(run_start=events_pb2.RunStart())
    # A federated server's run is open all along and logs only its own keys.
    ingest("server", start, events_pb2.Event(metric=events_pb2.Metric(key="fedavg/x", round=1)))
    ingest("a", start, point(1.0, 1))
    ingest("b", start, point(3.0, 1))
    assert agg.write_due() == 0  # no aggregate of eval/x yet: every open run is waited for
    now[0] += 2000
    assert agg.write_due() == 1  # round 1 at its deadline
    ingest("a", point(2.0, 2))
    assert agg.write_due() == 0  # b took part in round 1: waited for
    ingest("b", point(4.0, 2))
    assert agg.write_due() == 1  # both sites reported round 2, before its deadline
    ingest("c", start)  # a site that joins later is not waited for until it took part
    ingest("a", point(5.0, 3))
    ingest("b", point(7.0, 3))
    assert agg.write_due() == 1
    rounds = [(k, v, step) for _, points in _stored(conn) for k, v, step in points]
    assert [(v, step) for k, v, step in rounds if k == "eval/x/mean"] == [
        (2.0, 1),
        (3.0, 2),
        (6.0, 3),
    ]


def test_round_health_names_the_missing_the_slowest_and_the_late(tmp_path: Path) -> None:
    from server.aggregate.health import job_rounds

    conn = connect(tmp_path / "queue.db")
    now = [1_000_000]
    agg = Aggregator(
        conn, AggregateConfig(("eval/*",), deadline_s=30.0), on_stored=lambda k, n: None,
        clock_ms=lambda: now[0],
    )  # fmt: skip

    def report(client: str, value: float, round_: int) -> None:
        msg = events_pb2.EventBatch(client_id=client, job="j", run_key="r", first_seq=1)
        msg.events.add().metric.CopyFrom(events_pb2.Metric(key="eval/x", value=value, round=round_))
        seen = agg.observe([(f"{client}/r", msg, 1)])
        with table.transaction(conn):
            agg.record(conn, seen)

    for client in ("a", "b", "c"):
        report(client, 1.0, 1)
    agg.write_due()
    now[0] += 5_000
    report("a", 0.2, 2)
    now[0] += 3_000
    report("b", 0.6, 2)
    now[0] += 40_000
    (second, first) = job_rounds(conn, "j", now[0])
    assert second.line() == "round 2: 2 of 3 sites, c missing for 43 s; slowest b +3 s"
    assert second.spread == {"eval/x": {"min": 0.2, "max": 0.6, "mean": 0.4}}
    assert first.line() == "round 1: 3 of 3 sites"
    assert agg.write_due() == 1  # round 2 at its deadline, with a and b
    report("c", 0.9, 2)
    (second, _) = job_rounds(conn, "j", now[0])
    assert second.line() == "round 2: 3 of 3 sites; slowest c +43 s; after the deadline: c"
    assert second.as_json()["missing"] == [] and second.as_json()["late"] == ["c"]
