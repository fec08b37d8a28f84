"""The differential test of the bulk writer: event streams, the two databases they go into,
and what is compared (tables ids aside, MLflow's read API)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from hypothesis import strategies as st
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from server.flush.bulk.rows import Columns, Point, Row, plain_metric_key, stored_value
from server.flush.bulk.runs import NewRun
from server.flush.bulk.writer import BulkWriter, Call, create_engine

RUNS = 3
LONG_KEY = "k" * 250
METRIC_KEYS = ["loss", "acc/top1", "a b", LONG_KEY]
PARAM_KEYS = ["lr", "opt", LONG_KEY]
TAG_KEYS = ["note", "trackbridge.flushed", LONG_KEY]
VALUES = [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1.7976931348623157e308, 1e-300]

metric_values = st.one_of(st.sampled_from(VALUES), st.floats(allow_nan=True, allow_infinity=True))
metrics = st.builds(
    Metric,
    key=st.one_of(st.sampled_from(METRIC_KEYS), st.just("x" * 251)),  # 251: refused
    value=metric_values,
    timestamp=st.integers(0, 3),
    step=st.integers(-2, 3),
)
params = st.builds(
    Param,
    key=st.sampled_from(PARAM_KEYS),
    value=st.one_of(st.sampled_from(["0.1", "0.2", "adam", ""]), st.just("v" * 6001)),
)
tags = st.builds(
    RunTag,
    key=st.sampled_from(TAG_KEYS),
    value=st.one_of(st.sampled_from(["a", "b", ""]), st.just("t" * 8001)),
)


@st.composite
def _unique_params(draw: st.DrawFn) -> list[Param]:
    drawn = draw(st.lists(params, max_size=3))
    return list({p.key: p for p in drawn}.values())  # the receiver sends a key once a call


log_batch = st.tuples(
    st.just("log"),
    st.integers(0, RUNS - 1),
    st.lists(metrics, max_size=12),
    _unique_params(),
    st.lists(tags, max_size=3),
)
points_only = st.tuples(
    st.just("log"), st.integers(0, RUNS - 1), st.lists(metrics, max_size=12), st.just([]),
    st.just([]),
)  # fmt: skip
"""Calls of metric points alone: the receiver writes a run's plain ones as rows at once."""
run_change = st.tuples(
    st.sampled_from(["end", "resume", "delete", "restore"]), st.integers(0, RUNS - 1)
)
streams = st.lists(
    st.one_of(log_batch, log_batch, points_only, run_change), min_size=1, max_size=12
)


NEW_RUNS = [
    NewRun({"mlflow.user": "ana", "trackbridge.job": "j", "note": "a"}, "run0", 1000),
    NewRun({"mlflow.runName": "run1", "trackbridge.role": "client"}, "run1", 1001),
    NewRun({"mlflow.source.type": "LOCAL", "mlflow.parentRunId": "p"}, "run2", 999),
]
"""The runs a stream writes to: created with MLflow's create_run, or in one transaction."""


@dataclass
class Side:
    """One database and how a stream's calls reach it."""

    store: SqlAlchemyStore
    log: Callable[[str, list[Metric], list[Param], list[RunTag]], None]
    create_runs: Callable[[str, list[NewRun]], list[str]]
    log_calls: Callable[[str, list[Call]], None] | None = None
    """Several calls of a run at once (the bulk writer's ``log_calls``), when the side has it."""
    log_rows: Callable[[str, list[Row]], None] | None = None
    """A run's calls of plain points at once as ``metrics`` rows (``log_rows``), likewise."""
    run_ids: list[str] = field(default_factory=list)
    experiment_id: str = ""


def mlflow_side(uri: str, artifacts: str) -> Side:
    """MLflow's own store, as the receiver's MLflow sink writes it."""
    store = SqlAlchemyStore(uri, artifacts)

    def create_runs(experiment_id: str, runs: list[NewRun]) -> list[str]:
        return [  # as MlflowClient.create_run calls it
            store.create_run(
                experiment_id, run.tags.get("mlflow.user", "unknown"), run.start_time_ms,
                [RunTag(k, v) for k, v in run.tags.items()], run.run_name,
            ).info.run_id
            for run in runs
        ]  # fmt: skip

    return Side(store, store.log_batch, create_runs)


def metric_row(run_id: str, key: str, value: float, timestamp: int, step: int) -> Row:
    """A point's ``metrics`` row as MLflow's store writes it (``ROW``'s order): NaN is 0.0 with
    ``is_nan``, infinities the greatest finite doubles."""
    return (key, stored_value(value), timestamp, step, math.isnan(value), run_id)


def columns_of(rows: list[Row]) -> Columns:
    """``metrics`` rows (one run's) as the bulk writer's columns."""
    keys, values, timestamps, steps, nans, _runs = (list(c) for c in zip(*rows, strict=True))
    return Columns(keys, values, timestamps, steps, nans)


def bulk_side(uri: str, artifacts: str) -> Side:
    """The bulk writer for log_batch, MLflow's store for the rest (as BulkSink)."""
    store = SqlAlchemyStore(uri, artifacts)
    writer = BulkWriter(create_engine(uri))

    def log_rows(run_id: str, rows: list[Row]) -> None:
        writer.log_rows(run_id, columns_of(rows))

    return Side(store, writer.log_batch, writer.create_runs, writer.log_calls, log_rows)


def play(side: Side, name: str, stream: list[tuple[Any, ...]]) -> list[str]:
    """Runs a stream into one side; returns each call's outcome (its error, ids replaced).

    A side with ``log_calls`` gets a run's consecutive log calls at once, as the receiver
    writes them; when that is refused it gets them one by one, as the receiver then does: the
    outcomes and the rows must be those of the calls one after another."""
    side.experiment_id = side.store.create_experiment(name)
    side.run_ids = side.create_runs(side.experiment_id, NEW_RUNS)
    outcomes: list[str] = []
    i = 0
    while i < len(stream):
        together = _together(side, stream, i)
        rows = _rows(side, together)
        if rows and side.log_rows is not None:
            try:
                side.log_rows(side.run_ids[together[0][1]], rows)
            except MlflowException:
                pass  # as below
            else:
                outcomes += ["ok"] * len(together)
                i += len(together)
                continue
        if len(together) > 1 and side.log_calls is not None:
            calls = [Call([_point(m) for m in op[2]], op[3], op[4]) for op in together]
            try:
                side.log_calls(side.run_ids[together[0][1]], calls)
            except MlflowException:
                pass  # one by one, below
            else:
                outcomes += ["ok"] * len(together)
                i += len(together)
                continue
        for op, index, *rest in together:
            try:
                _apply(side, op, side.run_ids[index], rest)
                outcomes.append("ok")
            except MlflowException as exc:
                outcomes.append(f"{exc.error_code}: {_anonymous(side, exc.message)}")
        i += len(together)
    return outcomes


def _together(side: Side, stream: list[tuple[Any, ...]], start: int) -> list[tuple[Any, ...]]:
    """The stream's operations from ``start`` that go at once: a run's consecutive log calls
    (one operation otherwise)."""
    first = stream[start]
    end = start + 1
    if first[0] == "log" and side.log_calls is not None:
        while end < len(stream) and stream[end][0] == "log" and stream[end][1] == first[1]:
            end += 1
    return stream[start:end]


def _rows(side: Side, together: list[tuple[Any, ...]]) -> list[Row]:
    """The ``metrics`` rows of log calls that hold plain points alone, as the receiver decodes
    them from its queue (server/flush/slices.py); none when any call holds anything else."""
    if together[0][0] != "log" or any(op[3] or op[4] for op in together):
        return []
    points = [m for op in together for m in op[2]]
    plain = all(
        type(m.value) is float and type(m.timestamp) is int and type(m.step) is int
        and m.timestamp >= 0 and plain_metric_key(m.key)
        for m in points
    )  # fmt: skip
    if not plain:
        return []
    run_id = side.run_ids[together[0][1]]
    return [metric_row(run_id, m.key, m.value, m.timestamp, m.step) for m in points]


def _point(metric: Metric) -> Point:
    return Point(metric.key, metric.value, metric.timestamp, metric.step)


def _apply(side: Side, op: str, run_id: str, rest: list[Any]) -> None:
    store = side.store
    if op == "log":
        side.log(run_id, *rest)
    elif op == "end":
        store.update_run_info(run_id, RunStatus.FINISHED, 5000, None)
    elif op == "resume":
        store.update_run_info(run_id, RunStatus.RUNNING, None, None)
    elif op == "delete":
        store.delete_run(run_id)
    elif op == "restore":
        store.restore_run(run_id)


def _anonymous(side: Side, text: str) -> str:
    for i, run_id in enumerate(side.run_ids):
        text = text.replace(run_id, f"<run{i}>")
    return re.sub(r"\d{13,}", "<time>", text)


_NOT_COMPARED = ("run_uuid", "artifact_uri", "experiment_id", "deleted_time")


def tables(side: Side) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of the side's runs in MLflow's tables, run ids as run numbers, sorted."""
    index = {run_id: i for i, run_id in enumerate(side.run_ids)}
    out: dict[str, list[tuple[Any, ...]]] = {}
    meta = sa.MetaData()
    with side.store.engine.connect() as conn:
        for name in ("metrics", "latest_metrics", "params", "tags", "runs"):
            table = sa.Table(name, meta, autoload_with=conn)
            rows = conn.execute(table.select().where(table.c.run_uuid.in_(index))).mappings()
            keep = [c.name for c in table.c if c.name not in _NOT_COMPARED]
            out[name] = sorted((index[r["run_uuid"]], *(_plain(r[c]) for c in keep)) for r in rows)
    return out


def reads(side: Side) -> dict[str, Any]:
    """What MLflow's read API answers about the side's runs."""
    store = side.store
    out: dict[str, Any] = {}
    for i, run_id in enumerate(side.run_ids):
        run = store.get_run(run_id)
        out[f"run{i}"] = (
            run.info.status, run.info.lifecycle_stage, run.info.end_time, run.info.run_name,
            run.info.user_id, run.info.start_time, run.info.artifact_uri.endswith("/artifacts"),
            sorted((k, _plain(v)) for k, v in run.data.metrics.items()),
            sorted(run.data.params.items()), sorted(run.data.tags.items()),
        )  # fmt: skip
        for key in METRIC_KEYS:
            history = store.get_metric_history(run_id, key)
            out[f"history{i}/{key}"] = sorted(
                (m.step, m.timestamp, _plain(m.value)) for m in history
            )
    index = {run_id: i for i, run_id in enumerate(side.run_ids)}
    for filter_string, order_by in SEARCHES:
        found = store.search_runs(
            [side.experiment_id], filter_string, ViewType.ALL, max_results=100, order_by=order_by
        )
        out[f"search {filter_string} {order_by}"] = [index[r.info.run_id] for r in found]
    return out


SEARCHES = [
    ("", ["metrics.loss DESC", "attributes.start_time ASC"]),
    ("metrics.loss > 0", ["metrics.`acc/top1` ASC", "attributes.start_time ASC"]),
    ("metrics.`a b` <= 0.5", ["params.lr DESC", "attributes.start_time ASC"]),
    ("params.lr = '0.1'", ["tags.note ASC", "attributes.start_time DESC"]),
    ("tags.note != 'a'", ["metrics.loss ASC", "attributes.start_time ASC"]),
    ("attributes.status = 'RUNNING'", ["attributes.start_time DESC"]),
]


def _plain(value: Any) -> Any:
    """A value compared as stored: a float as its repr (NaN is not equal to itself)."""
    return repr(value) if isinstance(value, float) else value
