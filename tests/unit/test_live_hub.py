"""Pure logic of the live view: bounded series, the hub's bookkeeping, subscriptions, the JSON
and Prometheus encodings. A fake clock stands in for time; no servers."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.pb.v1 import events_pb2
from server.live import wire as live_json
from server.live.clients import MAX_KEYS_PER_CLIENT
from server.live.hub import Hub
from server.live.links import mlflow_ui_url, run_url
from server.live.model import MAX_QUEUED_DELTAS, Delta
from server.live.series import Series
from server.queue.sqlite import RunRecord

T0 = 1_700_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _batch(
    client: str, run_key: str, first_seq: int, points: list[tuple[str, float, int]], **kw: bool
) -> events_pb2.EventBatch:
    batch = events_pb2.EventBatch(client_id=client, job="job", run_key=run_key, first_seq=first_seq)
    if kw.get("start"):
        batch.events.add().run_start.run_name = client
    for key, value, step in points:
        m = batch.events.add().metric
        m.key, m.value, m.step, m.timestamp_ms = key, value, step, T0 + step
    if kw.get("end"):
        batch.events.add().run_end.status = events_pb2.RUN_STATUS_FINISHED
    return batch


def _hub(clock: FakeClock, **kw: object) -> Hub:
    return Hub(
        live_points=8,
        client_timeout_s=5.0,
        mlflow_ui_url="http://mlflow:5000",
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def test_series_stays_bounded_spans_the_run_and_knows_the_latest_point() -> None:
    series = Series(capacity=8, fresh_capacity=4)
    for i in range(1000):
        series.add(i, 500.0 if i == 333 else float(i % 7), i)  # one spike
    points = series.points()
    lows, highs = series.envelope()
    assert len(series) <= 8 and len(lows) == len(highs) == len(points)
    assert points[-1] == (999, 999 % 7, 999)
    stride = series.stride
    steps = [p[0] for p in points[:-1]]
    assert steps == list(range(stride - 1, 1000, stride))[: len(steps)]  # evenly spaced
    # Every bucket's envelope holds all of its points: the spike stays visible.
    assert max(highs) == 500.0 and min(lows) == 0.0
    spike = next(i for i, p in enumerate(points) if p[0] >= 333)
    assert highs[spike] == 500.0 and points[spike][1] != 500.0
    fresh = series.take_fresh()
    assert len(fresh) <= 5
    assert fresh[0] == (0, 0.0, 0)
    assert fresh[-1] == (999, 999 % 7, 999)
    assert series.take_fresh() == []
    series.clear()
    assert series.points() == []
    assert series.latest is None


def test_hub_counts_digests_and_pushes_once_per_pump() -> None:
    clock = FakeClock()
    hub = _hub(clock)
    sub = hub.subscribe("job")
    assert sub.take()[0]  # a new viewer starts with a snapshot
    hub.received(_batch("a", "run-a", 1, [("loss", 0.5, 0), ("loss", 0.25, 1)], start=True), 3)
    # A resend of what was already acked is counted as received but not drawn twice.
    hub.received(_batch("a", "run-a", 1, [("loss", 0.5, 0), ("loss", 0.25, 1)], start=True), 3)
    hub.received(_batch("a", "run-a", 4, [("loss", 0.125, 2)]), 4)
    hub.pump(states_due=True)
    resync, deltas, batches, dropped = sub.take()
    assert (resync, batches, dropped) == (False, [], 0)
    assert len(deltas) == 1
    loss = [(0, 0.5, T0), (1, 0.25, T0 + 1), (2, 0.125, T0 + 2)]
    assert deltas[0].points == {"a": {"loss": loss}}
    (row,) = deltas[0].clients or ()
    assert (row.events_received, row.events_acked, row.backlog_events) == (7, 4, 4)
    assert row.latest == {"loss": (2, 0.125, 1_700_000_000_002)}
    assert (row.state, row.connected) == ("connected", True)
    assert hub.series("job", None) == {"a": {"loss": loss}}

    # The flusher's reports arrive from its thread and are folded in by the next pump.
    hub.flushed("a/run-a", 3, 3, 0.02)  # the flusher reports owned keys
    hub.dead_lettered("a/run-a")
    hub.set_mlflow_run("a/run-a", "r1", "7")
    clock.now += 1
    hub.pump(states_due=True)
    (row,) = sub.take()[1][0].clients or ()
    assert (row.events_flushed, row.dead_letters, row.backlog_events) == (3, 1, 1)
    assert row.mlflow_run_url == "http://mlflow:5000/#/experiments/7/runs/r1"
    (family,) = hub.flush_seconds.collect()
    assert {s.name: s.value for s in family.samples}[
        "trackbridge_flush_duration_seconds_count"
    ] == 1
    assert hub.job_backlog("job") == 1
    assert hub.job_backlog("other") == 0

    # Silence past the client timeout means disconnected; a run end means finished.
    clock.now += 10
    hub.pump(states_due=True)
    assert hub.rows()[0].state == "disconnected"
    hub.heartbeat("a/run-a")
    assert hub.connected_clients() == 1
    # A run's end: finished at the next pump, and no longer counted as connected, though the
    # client is still heard from (it may heartbeat until it closes).
    sub.take()
    hub.received(_batch("a", "run-a", 5, [], end=True), 5)
    hub.pump(states_due=False)
    (row,) = hub.rows()
    assert (row.state, row.connected) == ("finished", False)
    # ...pushed with this pump, not at the next state period.
    (delta,) = sub.take()[1]
    assert [r.state for r in delta.clients or ()] == ["finished"]
    assert hub.connected_clients() == 0
    assert hub.jobs() == {"job": (1, 0)}


def test_a_new_top_level_run_starts_the_charts_afresh() -> None:
    hub = _hub(FakeClock())
    hub.received(_batch("a", "run-1", 1, [("x", 1.0, 1)], start=True), 2)
    hub.pump(states_due=False)
    hub.received(_batch("a", "run-2", 1, [("x", 9.0, 0)], start=True), 2)
    hub.pump(states_due=False)
    assert hub.series("job", None) == {"a": {"x": [(0, 9.0, T0)]}}
    assert hub.rows()[0].run_key == "run-2"


def test_a_run_resumed_by_another_process_continues_its_curve() -> None:
    # Flower's Deployment Engine: every message a process, each resuming the site's MLflow run
    # under a run key of its own; the page keeps one curve and the run's state.
    hub = _hub(FakeClock())
    hub.received(_batch("site", "p1", 1, [("acc", 0.5, 1)], start=True), 2)
    hub.pump(states_due=False)
    hub.set_mlflow_run("site/p1", "r1", "3")
    for n, key in enumerate(("p2", "p3"), start=2):
        resumed = _batch("site", key, 1, [("acc", n / 10, n)])
        resumed.events.insert(
            0, events_pb2.Event(run_start=events_pb2.RunStart(resume_run_id="r1"))
        )
        hub.received(resumed, 2)
        hub.pump(states_due=False)
    assert [p[:2] for p in hub.series("job", None)["site"]["acc"]] == [(1, 0.5), (2, 0.2), (3, 0.3)]
    (row,) = hub.rows()
    assert (row.run_key, row.state, row.mlflow_run_id) == ("p3", "connected", "r1")
    # Resuming another MLflow run of the client is a new curve.
    other = _batch("site", "p4", 1, [("acc", 0.9, 1)])
    other.events.insert(0, events_pb2.Event(run_start=events_pb2.RunStart(resume_run_id="r9")))
    hub.received(other, 2)
    hub.pump(states_due=False)
    assert hub.series("job", None)["site"]["acc"] == [(1, 0.9, T0 + 1)]


def test_a_restarted_hub_knows_its_runs_and_bounds_keys() -> None:
    record = RunRecord("run-a", "a", "job", 10, 4, "r1", "3", "FINISHED")
    hub = _hub(FakeClock(), runs=[record])
    (row,) = hub.rows()
    assert (row.client_id, row.backlog_events, row.state) == ("a", 6, "finished")
    assert not row.connected
    assert row.mlflow_run_url == "http://mlflow:5000/#/experiments/3/runs/r1"
    hub.heartbeat("a/run-a")
    assert hub.rows()[0].state == "finished"
    assert not hub.rows()[0].connected  # heard from, but its run is over
    running = RunRecord("run-c", "c", "job", 2, 2, "r2", "3", "RUNNING")
    hub = _hub(FakeClock(), runs=[record, running])
    assert [r.state for r in hub.rows()] == ["finished", "disconnected"]
    hub.heartbeat("run-c")
    assert [r.connected for r in hub.rows()] == [False, True]
    many = [(f"k{i}", 1.0, 0) for i in range(MAX_KEYS_PER_CLIENT + 5)]
    hub.received(_batch("b", "run-b", 1, many), len(many))
    hub.pump(states_due=False)
    assert len(hub.series("job", None)["b"]) == MAX_KEYS_PER_CLIENT


def test_event_viewers_get_new_events_only_and_slow_viewers_resync() -> None:
    hub = _hub(FakeClock())
    tail = hub.subscribe("job", "b", events=True)
    other = hub.subscribe("other-job")
    tail.take()
    other.take()
    hub.received(_batch("a", "run-a", 1, [("x", 1.0, 1)]), 1)
    hub.received(_batch("b", "run-b", 1, [("x", 1.0, 1), ("x", 2.0, 2)]), 2)
    hub.received(_batch("b", "run-b", 2, [("x", 2.0, 2), ("x", 3.0, 3)]), 3)  # overlaps
    _, _, batches, _ = tail.take()
    seen = [(b.client_id, b.first_seq, len(b.events)) for b in batches]
    assert seen == [("b", 1, 2), ("b", 3, 1)]
    hub.pump(states_due=False)
    assert other.take()[1] == []  # other jobs' news is not pushed to it
    for _ in range(MAX_QUEUED_DELTAS + 1):
        other.push(Delta("other-job", {}, None))
    resync, deltas, _, _ = other.take()
    assert resync
    assert deltas == []


def test_links_to_the_mlflow_ui() -> None:
    assert (
        mlflow_ui_url("https://user:secret@mlflow.example/base/") == "https://mlflow.example/base"
    )
    assert mlflow_ui_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert mlflow_ui_url("sqlite:////data/mlflow.db") == "http://127.0.0.1:5000"
    assert mlflow_ui_url("postgresql://u:p@db/mlflow") == "http://127.0.0.1:5000"
    assert run_url("http://m", "1", "") == ""
    assert run_url("http://m", "1", "abc") == "http://m/#/experiments/1/runs/abc"


def test_page_json_carries_non_finite_values_as_strings() -> None:
    hub = _hub(FakeClock())
    hub.received(
        _batch("a", "r", 1, [("x", math.nan, 0), ("y", math.inf, 0), ("z", -math.inf, 0)]), 3
    )
    hub.pump(states_due=False)
    message = json.loads(live_json.snapshot(hub, "job", None, {"mlflow_up": True}))
    assert message["clients"][0]["latest"] == {
        "x": [0, "NaN", T0],
        "y": [0, "Infinity", T0],
        "z": [0, "-Infinity", T0],
    }
    assert message["points"]["a"]["x"]["v"] == ["NaN"]
    assert live_json.delta([], None, {}) is None


def test_metrics_text_parses_and_escapes_labels() -> None:
    hub = _hub(FakeClock())
    hub.received(_batch('we"ird\\cli\nent', "r", 1, [("x", 1.0, 0)]), 1)
    hub.flushed("r", 1, 1, 0.3)
    from server.live.metrics import Exporter
    from server.live.model import Counters

    counters = Counters(
        events_stored=1,
        events_duplicate=0,
        events_flushed=1,
        batches_rejected=2,
        batches_throttled=0,
        backlog_events=0,
        dead_letters=0,
        mlflow_errors=5,
        queued_batches=0,
        calls_unauthenticated=3,
        batches_rate_limited=4,
        reads_waiting=2,
    )
    exporter = Exporter(hub.client_counters, lambda: counters, lambda: False, hub.flush_seconds)
    body, content_type = exporter.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    (sample,) = families["trackbridge_events_received"].samples
    assert sample.labels == {"job": "job", "client": 'we"ird\\cli\nent'}
    assert sample.value == 1
    assert families["trackbridge_mlflow_up"].samples[0].value == 0
    assert families["trackbridge_mlflow_errors"].samples[0].value == 5
    assert families["trackbridge_batches_rejected"].samples[0].value == 2
    assert families["trackbridge_reads_waiting"].samples[0].value == 2
    refused = {s.labels["reason"]: s.value for s in families["trackbridge_calls_refused"].samples}
    assert refused == {
        "unauthenticated": 3,
        "permission_denied": 0,
        "calls_in_flight": 0,
        "rate_limit": 4,
        "disk_reserve": 0,
    }
    histogram = {
        s.labels.get("le"): s.value
        for s in families["trackbridge_flush_duration_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert histogram["0.25"] == 0
    assert histogram["0.5"] == 1
    assert histogram["+Inf"] == 1
    # prometheus_client's own collectors ride along.
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert "python_info" in families


@pytest.mark.parametrize("points", [2, 3, 7])
def test_series_capacity_is_kept_for_any_size(points: int) -> None:
    series = Series(capacity=points)
    for i in range(points * 37):
        series.add(i, float(i), 0)
        assert len(series) <= points
        assert series.points()[-1][1] == float(i)
        assert series.envelope()[0][0] == 0.0 and series.envelope()[1][-1] == float(i)


def test_a_thinned_series_reaches_the_page_and_its_csv_with_its_envelope() -> None:
    hub = _hub(FakeClock())  # 8 buckets per series
    points = [("x", 50.0 if step == 13 else float(step % 3), step) for step in range(40)]
    hub.received(_batch("a", "run-1", 1, points, start=True), 41)
    hub.pump(states_due=False)
    shown = json.loads(live_json.snapshot(hub, "job", None, {}))["points"]["a"]["x"]
    assert len(shown["s"]) <= 8 and shown["s"][-1] == 39
    assert len(shown["lo"]) == len(shown["hi"]) == len(shown["s"])
    assert max(shown["hi"]) == 50.0 and min(shown["lo"]) == 0.0
    rows = live_json.chart_csv(hub, "job", "x").splitlines()
    assert rows[0] == "client,step,value,min,max,timestamp_ms"
    assert len(rows) == len(shown["s"]) + 1
    assert any(row.split(",")[4] == "50.0" for row in rows[1:])
