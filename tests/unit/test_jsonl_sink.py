"""The JSON-lines sink on real files and a real queue file: line format, safe names, and
exactly once when batches are handed again (a restart between the write and the queue's
progress) or the last line is torn."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bridge.convert import batch_to_proto
from bridge.events import (
    DeleteTag,
    Dropped,
    Event,
    EventBatch,
    Metric,
    MlflowCall,
    Param,
    RunEnd,
    RunStart,
    RunStatus,
    Tag,
)
from server.config import ReceiverConfig, parse_sinks
from server.flush.jsonl import (
    MAX_OPEN_FILES,
    JsonlDamaged,
    JsonlInUse,
    JsonlSink,
    encode_line,
    event_line,
    safe_name,
)
from server.flush.mirror import Mirror, SinkFailed
from server.queue.schema import connect
from server.queue.sqlite import Queue, RunRecord
from server.security.ownership import owned_key

T0 = 1_700_000_000_000


def _record(job: str = "job-1", client: str = "site-1", run: str = "r1") -> RunRecord:
    return RunRecord(owned_key(client, run), client, job, 0, 0, "", "", "")


def _lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n"), "every line is complete"
    return [json.loads(line) for line in text.splitlines()]


def _metrics(first: int, count: int) -> list[tuple[int, Event]]:
    return [(s, Metric("loss", 1.0 / s, s, T0 + s)) for s in range(first, first + count)]


def test_each_kind_is_one_line_with_its_fields_and_defaults_left_out() -> None:
    start = RunStart(experiment="exp", run_name="n", tags={"a": "b"}, start_time_ms=T0)
    assert event_line(1, start) == {
        "seq": 1, "kind": "run_start", "experiment": "exp", "run_name": "n", "tags": {"a": "b"},
        "start_time_ms": T0,
    }  # fmt: skip
    assert event_line(2, Metric("m", 0.5, 0, T0)) == {
        "seq": 2, "kind": "metric", "key": "m", "value": 0.5, "step": 0, "timestamp_ms": T0,
    }  # fmt: skip
    assert event_line(3, Param("p", "1")) == {"seq": 3, "kind": "param", "key": "p", "value": "1"}
    assert event_line(4, Tag("t", "v"))["kind"] == "tag"
    assert event_line(5, DeleteTag("t")) == {"seq": 5, "kind": "delete_tag", "key": "t"}
    assert event_line(6, RunEnd(RunStatus.FAILED, T0 + 9)) == {
        "seq": 6, "kind": "run_end", "status": "FAILED", "end_time_ms": T0 + 9,
    }  # fmt: skip
    assert event_line(7, MlflowCall("mlflow.LogInputs", b"\x00\xff")) == {
        "seq": 7, "kind": "mlflow_call", "method": "mlflow.LogInputs", "request": "AP8=",
    }  # fmt: skip
    assert event_line(8, Dropped(3, "buffer_full")) == {
        "seq": 8, "kind": "dropped", "count": 3, "reason": "buffer_full",
    }  # fmt: skip
    values = [
        event_line(9, Metric("m", v, 1, T0))["value"] for v in (math.nan, math.inf, -math.inf)
    ]
    assert values == ["NaN", "Infinity", "-Infinity"]  # JSON has no NaN: strict readers parse it


def test_names_are_safe_and_distinct() -> None:
    names = ["a/b", "a%2Fb", "..", ".", "", "%", ".hidden", "x y", "é", "a" * 400, "a" * 401]
    safe = [safe_name(n) for n in names]
    assert len(set(safe)) == len(names)
    for s in safe:
        assert "/" not in s and not s.startswith(".") and s not in ("", ".", "..")
        assert len(s.encode()) <= 200
    assert safe_name("site-1_a.b") == "site-1_a.b"


def test_layout_header_and_exactly_once_across_a_restart(tmp_path: Path) -> None:
    record = _record(job="job/../x", client="site 1", run="run.1")
    sink = JsonlSink(tmp_path / "files")
    sink.open()
    assert sink.write(record, _metrics(1, 5)) == 5
    path = tmp_path / "files" / "job%2F..%2Fx" / "site%201" / "run.1.jsonl"
    assert sink.path(record) == path
    assert sink.write(record, _metrics(3, 5)) == 2, "3..5 held already, 6 and 7 are new"
    sink.close()

    again = JsonlSink(tmp_path / "files")  # a restarted receiver
    again.open()
    assert again.written_through(record) == 7
    assert again.write(record, _metrics(1, 10)) == 3
    again.close()
    lines = _lines(path)
    assert lines[0] == {"seq": 0, "kind": "run", "job": "job/../x", "client_id": "site 1",
                        "run_key": "run.1"}  # fmt: skip
    assert [line["seq"] for line in lines] == list(range(11))
    assert [line["value"] for line in lines[1:]] == [1.0 / s for s in range(1, 11)]


def test_a_torn_last_line_is_cut_off_and_written_again(tmp_path: Path) -> None:
    record = _record()
    sink = JsonlSink(tmp_path)
    sink.write(record, _metrics(1, 3))
    path = sink.path(record)
    sink.close()
    with path.open("ab") as f:
        f.write(b'{"seq":4,"kind":"metric","key":"lo')  # a write cut short
    again = JsonlSink(tmp_path)
    assert again.written_through(record) == 3
    assert again.write(record, _metrics(1, 5)) == 2
    again.close()
    assert [line["seq"] for line in _lines(path)] == [0, 1, 2, 3, 4, 5]


def test_a_file_not_ending_in_a_line_of_ours_is_refused(tmp_path: Path) -> None:
    record = _record()
    sink = JsonlSink(tmp_path)
    path = sink.path(record)
    path.parent.mkdir(parents=True)
    path.write_text("someone else's notes\n")
    with pytest.raises(JsonlDamaged, match="move it away"):
        sink.write(record, _metrics(1, 1))
    sink.close()


def test_one_receiver_per_directory(tmp_path: Path) -> None:
    first = JsonlSink(tmp_path)
    first.open()
    second = JsonlSink(tmp_path)
    with pytest.raises(JsonlInUse, match="another --sink jsonl:DIR"):
        second.open()
    first.close()
    second.open()  # free once the first lets go
    second.close()


def _store(queue: Queue, record: RunRecord, first: int, events: list[Event]) -> None:
    batch = EventBatch(record.client_id, record.job, record.run_key, first, tuple(events))
    payload = batch_to_proto(batch).SerializeToString()
    queue.store([(record.run_key, record.client_id, record.job, first, batch.last_seq, payload)])


def test_mirror_hands_batches_again_after_a_crash_and_each_event_lands_once(
    tmp_path: Path,
) -> None:
    conn = connect(tmp_path / "queue.db")
    queue = Queue(conn)
    record = _record()
    for first in range(1, 100, 10):
        _store(queue, record, first, [e for _, e in _metrics(first, 10)])
    sink = JsonlSink(tmp_path / "files")
    mirror = Mirror(queue, [sink])
    assert not mirror.catch_up(record, until=float("inf"))
    # Killed here: the file has every event, the queue has not forgotten one batch.
    sink.close()
    assert len(queue.pending(record.run_key, 100)) == 10
    restarted = JsonlSink(tmp_path / "files")
    mirror = Mirror(queue, [restarted])
    assert mirror.cover(record, queue.pending(record.run_key, 100)) == 0
    _store(queue, record, 101, [Param("p", "x"), RunEnd(RunStatus.FINISHED, T0)])
    assert mirror.cover(record, queue.pending(record.run_key, 100)) == 2
    restarted.close()
    conn.close()
    lines = _lines(restarted.path(record))
    assert [line["seq"] for line in lines] == list(range(103))
    assert lines[-1] == {"seq": 102, "kind": "run_end", "status": "FINISHED", "end_time_ms": T0}


def test_a_failing_sink_is_named_in_the_error(tmp_path: Path) -> None:
    conn = connect(tmp_path / "queue.db")
    queue = Queue(conn)
    record = _record()
    _store(queue, record, 1, [Metric("m", 1.0, 0, T0)])
    blocked = tmp_path / "files"
    blocked.mkdir()
    (blocked / safe_name(record.job)).write_text("a file where the job's folder goes")
    with pytest.raises(SinkFailed, match="the jsonl sink failed"):
        Mirror(queue, [JsonlSink(blocked)]).cover(record, queue.pending(record.run_key, 10))
    conn.close()


def test_sinks_combine() -> None:
    assert parse_sinks(["mlflow"]) == (True, None)
    assert parse_sinks(["jsonl:/x"]) == (False, Path("/x"))
    assert parse_sinks(["mlflow", "jsonl:/x"]) == (True, Path("/x"))
    for bad in (["kafka"], ["jsonl:"], ["jsonl"], ["jsonl:/a", "jsonl:/b"]):
        with pytest.raises(ValueError):
            parse_sinks(bad)
    assert ReceiverConfig.resolve(env={}).sinks == ("mlflow",)
    both = ReceiverConfig.resolve(env={"TRACKBRIDGE_SINKS": "mlflow, jsonl:/x"})
    assert both.sinks == ("mlflow", "jsonl:/x")
    assert ReceiverConfig.resolve(sinks=["jsonl:/y"], env={}).mlflow_sink is False


def test_fsync_full_writes_and_reopens_the_same(tmp_path: Path) -> None:
    record = _record(job="deep", client="c", run="r")
    sink = JsonlSink(tmp_path / "a" / "b", fsync=True)  # parents made (and fsynced) too
    sink.open()
    assert sink.write(record, _metrics(1, 3)) == 3
    sink.close()
    again = JsonlSink(tmp_path / "a" / "b", fsync=True)
    assert again.write(record, _metrics(2, 3)) == 1
    again.close()
    assert [line["seq"] for line in _lines(again.path(record))] == [0, 1, 2, 3, 4]


def test_many_runs_past_the_open_file_limit_stay_exactly_once(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    records = [_record(run=f"r{n}") for n in range(MAX_OPEN_FILES + 20)]
    for extra in range(2):  # the second pass reopens files closed to stay under the limit
        for n, record in enumerate(records):
            assert sink.write(record, _metrics(1, n % 3 + 1 + extra)) == (1 if extra else n % 3 + 1)
    sink.close()
    for n, record in enumerate(records):
        assert [line["seq"] for line in _lines(sink.path(record))] == list(range(n % 3 + 3))


def test_the_fast_line_is_the_json_of_the_event_line() -> None:
    encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    events: list[Event] = [
        RunStart(experiment="é\"x", run_name="n\n", tags={"a": "b\\"}, top_level=True),
        Metric("m/ü", 0.1, -3, T0), Metric("m", math.nan, 0, 0), Metric("m", -math.inf, 1, 2),
        Metric("m", 1e300, 2**40, T0), Param("p", "\u2028"), Tag("t", ""), DeleteTag("t"),
        RunEnd(RunStatus.KILLED, 0), MlflowCall("mlflow.X", b""), Dropped(1, "r", 2, 3, 4, 5),
    ]  # fmt: skip
    for seq, event in enumerate(events, start=1):
        line = encode_line(seq, event)
        assert line == encoder.encode(event_line(seq, event)) + "\n"
        assert json.loads(line) == event_line(seq, event)
