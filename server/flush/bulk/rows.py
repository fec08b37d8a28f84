"""A metric point as the bulk writer takes it, and the ``metrics`` row MLflow's store makes of
it (server/flush/bulk/writer.py says how MLflow's rows are made)."""

from __future__ import annotations

import functools
import operator
from typing import Any, NamedTuple

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import _validate_metric

_MAX_FLOAT = 1.7976931348623157e308
_INF = float("inf")
ROW = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
"""A ``metrics`` row's columns, in the order of the tuples the writer inserts."""

Row = tuple[str, float, int, int, bool, str]
"""A ``metrics`` row, its columns in the order of ``ROW``."""


def plain_metric_key(key: str) -> bool:
    """Whether MLflow takes ``key`` as a metric's name (its own check, each key asked once)."""
    return _plain_key(key)


@functools.lru_cache(maxsize=4096)
def _plain_key(key: str) -> bool:
    try:
        _validate_metric(key, 0.0, 0, 0)  # type: ignore[no-untyped-call]
    except MlflowException:
        return False
    return True


def metric_row(run_id: str, key: str, value: float, timestamp: int, step: int) -> Row:
    """A point's ``metrics`` row as MLflow's store writes it: NaN is 0.0 with ``is_nan``,
    infinities the greatest finite doubles."""
    if value != value:  # NaN  # noqa: PLR0124 - cheaper than math.isnan per point
        return (key, 0.0, timestamp, step, True, run_id)
    if value in (_INF, -_INF):
        value = _MAX_FLOAT if value > 0 else -_MAX_FLOAT
    return (key, value, timestamp, step, False, run_id)


class Point(NamedTuple):
    """A metric point as MLflow's ``Metric`` has it (cheaper to make: one per point)."""

    key: str
    value: float
    timestamp: int
    step: int


def plainly_valid(metrics: list[Point]) -> bool:
    """Whether every point passes MLflow's checks, told fast: plain numbers, a timestamp not
    negative, each key checked once by MLflow's own function. False sends the call through
    MLflow's validation of every point, which raises MLflow's error for the first bad one."""
    keys: set[str] = set()
    for metric in metrics:
        value, timestamp, step = metric.value, metric.timestamp, metric.step
        if type(value) not in (float, int) or type(timestamp) is not int or timestamp < 0:
            return False
        if type(step) is not int:
            return False
        if metric.key not in keys:
            try:
                _validate_metric(metric.key, value, timestamp, step)  # type: ignore[no-untyped-call]
            except MlflowException:
                return False
            keys.add(metric.key)
    return True


def points_rows(run_id: str, metrics: list[Point]) -> list[Row]:
    """The calls' distinct ``metrics`` rows (columns ``ROW``), in the calls' order."""
    rows = (
        metric_row(run_id, m.key, float(m.value), int(m.timestamp), int(m.step)) for m in metrics
    )
    return list(dict.fromkeys(rows))  # a point already there (its whole key) is written once


_KEY = operator.itemgetter(0)
_ORDER = operator.itemgetter(3, 2, 1)
"""A row's place in MLflow's order of points: (step, timestamp, value)."""


def latest(rows: list[Row]) -> list[dict[str, Any]]:
    """Each key's candidate for ``latest_metrics``: its first row with the greatest
    (step, timestamp, value)."""
    if len(set(map(_KEY, rows))) == 1:  # one key (the common case): max keeps the first
        first: Row = max(rows, key=_ORDER)
        return [dict(zip(ROW, first, strict=True))]
    best: dict[str, tuple[Any, ...]] = {}
    for row in rows:
        held = best.get(row[0])
        if held is None or (row[3], row[2], row[1]) > (held[3], held[2], held[1]):
            best[row[0]] = row
    return [dict(zip(ROW, row, strict=True)) for row in best.values()]


def last_per_key(run_id: str, tags: list[RunTag]) -> list[dict[str, Any]]:
    last = {t.key: t.value for t in tags}
    return [{"key": k, "value": v, "run_uuid": run_id} for k, v in last.items()]
