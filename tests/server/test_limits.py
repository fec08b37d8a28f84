"""log_batch limits: bridge.limits.split_log_batch, and a run that needs many log_batch calls."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import pytest
from mlflow.entities import Metric as MlflowMetric
from mlflow.entities import Param as MlflowParam
from mlflow.entities import RunTag
from mlflow.protos.service_pb2 import LogBatch
from mlflow.utils.proto_json_utils import message_to_json
from mlflow.utils.validation import _validate_batch_log_limits, _validate_param_keys_unique

from bridge.events import Metric, Param, Tag
from bridge.limits import LogBatchChunk, split_log_batch
from tests.support.mlflow_reads import all_points, group_points, user_tags, wait_for_children

Entry = Metric | Param | Tag


def _metrics(n: int, key: str = "loss") -> list[Metric]:
    return [Metric(key, i / 7, i, 1_700_000_000_000 + i) for i in range(n)]


def _chunks(entries: Iterable[Entry]) -> list[LogBatchChunk]:
    chunks = list(split_log_batch(entries))
    for chunk in chunks:
        assert len(chunk) > 0, "an empty chunk is a wasted log_batch call"
    return chunks


def _request_bytes(chunk: LogBatchChunk) -> int:
    """The size of the log_batch request MLflow's REST client sends for this chunk."""
    message = LogBatch(
        run_id="0123456789abcdef0123456789abcdef",
        metrics=[
            MlflowMetric(m.key, m.value, m.timestamp_ms, m.step).to_proto() for m in chunk.metrics
        ],
        params=[MlflowParam(p.key, p.value).to_proto() for p in chunk.params],
        tags=[RunTag(t.key, t.value).to_proto() for t in chunk.tags],
    )
    # rest_utils.call_endpoint json.loads this and hands it to requests, which re-dumps it.
    body = json.dumps(json.loads(message_to_json(message)), allow_nan=False)
    return len(body.encode("utf-8"))


def _assert_mlflow_accepts(chunk: LogBatchChunk) -> None:
    """MLflow's own log_batch checks, run in-process on the chunk."""
    _validate_batch_log_limits(chunk.metrics, chunk.params, chunk.tags)
    _validate_param_keys_unique([MlflowParam(p.key, p.value) for p in chunk.params])
    assert _request_bytes(chunk) <= 1_000_000


def _apply(entries: Iterable[Entry]) -> tuple[list[Metric], dict[str, str], dict[str, str]]:
    """What a run holds after ``entries`` are logged one by one (params: first value stays)."""
    metrics: list[Metric] = []
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, Metric):
            metrics.append(entry)
        elif isinstance(entry, Param):
            params.setdefault(entry.key, entry.value)
        else:
            tags[entry.key] = entry.value
    return metrics, params, tags


def _apply_chunks(
    chunks: list[LogBatchChunk],
) -> tuple[list[Metric], dict[str, str], dict[str, str]]:
    entries: list[Entry] = []
    for chunk in chunks:
        entries.extend(chunk.metrics)
        entries.extend(chunk.params)
        entries.extend(chunk.tags)
    return _apply(entries)


# -- unit tests of split_log_batch -------------------------------------------------------------


def test_no_entries_no_chunks() -> None:
    assert _chunks([]) == []


def test_metrics_are_cut_at_1000_in_order() -> None:
    metrics = _metrics(2500)
    chunks = _chunks(metrics)
    assert [len(c.metrics) for c in chunks] == [1000, 1000, 500]
    assert [m for c in chunks for m in c.metrics] == metrics
    for chunk in chunks:
        _assert_mlflow_accepts(chunk)


def test_params_are_cut_at_100_in_order() -> None:
    params = [Param(f"p{i:03d}", str(i)) for i in range(250)]
    chunks = _chunks(params)
    assert [len(c.params) for c in chunks] == [100, 100, 50]
    assert [p for c in chunks for p in c.params] == params


def test_tags_are_cut_at_100_in_order() -> None:
    tags = [Tag(f"t{i:03d}", str(i)) for i in range(230)]
    chunks = _chunks(tags)
    assert [len(c.tags) for c in chunks] == [100, 100, 30]
    assert [t for c in chunks for t in c.tags] == tags


def test_at_most_1000_entities_per_chunk() -> None:
    entries: list[Entry] = []
    for i in range(950):
        entries.append(Metric("m", float(i), i, i))
        if i % 10 == 0:
            entries.append(Param(f"p{i}", "v"))
            entries.append(Tag(f"t{i}", "v"))
    chunks = _chunks(entries)
    assert len(chunks) == 2
    assert len(chunks[0]) == 1000
    for chunk in chunks:
        _assert_mlflow_accepts(chunk)
    assert _apply_chunks(chunks) == _apply(entries)


def test_a_param_key_appears_once_per_chunk() -> None:
    entries: list[Entry] = [Param("lr", "0.1"), Metric("m", 1.0, 0, 0), Param("lr", "0.1")]
    (chunk,) = _chunks(entries)
    assert chunk.params == (Param("lr", "0.1"),)
    assert chunk.metrics == (Metric("m", 1.0, 0, 0),)
    _assert_mlflow_accepts(chunk)


def test_the_last_tag_value_wins() -> None:
    entries: list[Entry] = [Tag("phase", "warmup"), Metric("m", 1.0, 0, 0), Tag("phase", "done")]
    (chunk,) = _chunks(entries)
    assert chunk.tags == (Tag("phase", "done"),)


def test_a_repeated_tag_key_does_not_count_against_the_limit() -> None:
    entries: list[Entry] = [Tag(f"t{i}", "a") for i in range(100)]
    entries.append(Tag("t0", "b"))
    (chunk,) = _chunks(entries)
    assert len(chunk.tags) == 100
    assert dict((t.key, t.value) for t in chunk.tags)["t0"] == "b"


def test_a_tag_overwritten_across_chunks_ends_with_its_last_value() -> None:
    entries: list[Entry] = [Tag("phase", "first")]
    entries += _metrics(1500)
    entries.append(Tag("phase", "second"))
    chunks = _chunks(entries)
    assert len(chunks) == 2
    assert _apply_chunks(chunks)[2] == {"phase": "second"}


@pytest.mark.parametrize("char", ["x", "\u00e9", "\U0001f600"])
def test_large_values_stay_under_one_megabyte_per_request(char: str) -> None:
    long_key = "k" * 250
    entries: list[Entry] = []
    for i in range(100):
        entries.append(Param(f"param{i:03d}", char * 6000))
        entries.append(Tag(f"tag{i:03d}", char * 8000))
    entries += [
        Metric(f"{long_key[:-4]}{i % 50:04d}", -1 / 3, 10**12 + i, 1_700_000_000_000)
        for i in range(600)
    ]
    chunks = _chunks(entries)
    assert len(chunks) > 1
    for chunk in chunks:
        _assert_mlflow_accepts(chunk)
    assert _apply_chunks(chunks) == _apply(entries)


def test_a_long_mixed_sequence_keeps_every_entry_and_its_meaning() -> None:
    rng = random.Random(20240611)
    entries: list[Entry] = []
    for i in range(6000):
        roll = rng.random()
        if roll < 0.8:
            entries.append(Metric(f"m{rng.randrange(7)}", rng.uniform(-5, 5), i, 1_000 + i))
        elif roll < 0.9:
            key = f"p{rng.randrange(300)}"
            entries.append(Param(key, f"value-of-{key}"))
        else:
            entries.append(Tag(f"t{rng.randrange(150)}", f"v{i}"))
    chunks = _chunks(entries)
    for chunk in chunks:
        _assert_mlflow_accepts(chunk)
    assert _apply_chunks(chunks) == _apply(entries)
    # metric order is kept across chunk boundaries
    assert [m for c in chunks for m in c.metrics] == [e for e in entries if isinstance(e, Metric)]


# -- end to end ----------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_run_beyond_every_log_batch_limit_reaches_mlflow_whole(
    receiver: Any, make_writer: Any, mlflow_client: Any, job: str
) -> None:
    t0 = 1_700_000_300_000
    keys = ["loss", "acc", "lr/group.0", "grad norm", "val:loss"]
    points: list[tuple[str, float, int, int]] = []
    params: dict[str, str] = {}
    tags: dict[str, str] = {"origin": "limits-test"}

    writer = make_writer(receiver.address, "limits-client", job)
    writer.start_run("limits", tags={"origin": "limits-test"})
    for i in range(2500):  # 2500 points: 500 steps of 5 keys
        key = keys[i % len(keys)]
        step = i // len(keys)
        value = (i * 37 % 1000) / 997
        writer.log_metric(key, value, step=step, timestamp=t0 + i)
        points.append((key, value, step, t0 + i))
        if i % 10 == 0:  # 250 params
            writer.log_param(f"param_{i // 10:03d}", i)
            params[f"param_{i // 10:03d}"] = str(i)
        if i % 10 == 3 and i < 2300:  # 230 tags
            writer.set_tag(f"tag.{i:04d}", f"value {i}")
            tags[f"tag.{i:04d}"] = f"value {i}"
        if i in (5, 1500, 2400):  # overwritten across log_batch calls: the last value stays
            writer.set_tag("phase", f"phase-{i}")
            tags["phase"] = f"phase-{i}"
    assert len(params) == 250 and len(tags) == 232
    writer.end_run("FINISHED")
    assert writer.close(timeout_s=60) == 0

    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=120)
    assert run.info.status == "FINISHED"
    assert all_points(mlflow_client, run) == group_points(points)
    assert run.data.params == params
    assert user_tags(run) == tags


def test_a_param_changed_within_a_chunk_goes_to_the_next_chunk_rather_than_vanishing() -> None:
    entries = [Param("lr", "1"), Metric("m", 1.0, 0, 0), Param("lr", "1"), Param("lr", "2")]
    chunks = list(split_log_batch(entries))
    assert [[(p.key, p.value) for p in c.params] for c in chunks] == [[("lr", "1")], [("lr", "2")]]
    assert [len(c.metrics) for c in chunks] == [1, 0]
