"""A metric point as the bulk writer takes it, and the ``metrics`` row MLflow's store makes of
it (server/flush/bulk/writer.py says how MLflow's rows are made)."""

from __future__ import annotations

import functools
import itertools
import math
import operator
from dataclasses import dataclass, field
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


def stored_value(value: float) -> float:
    """A point's value as MLflow's store writes it: NaN is 0.0 (``is_nan`` says it apart),
    infinities the greatest finite doubles."""
    if value != value:  # noqa: PLR0124 - NaN, cheaper than math.isnan per point
        return 0.0
    if value in (_INF, -_INF):
        return _MAX_FLOAT if value > 0 else -_MAX_FLOAT
    return value


def stored_values(values: list[float]) -> tuple[list[float], list[bool]]:
    """``values`` as MLflow's store writes them, and which were NaN (``is_nan``); when all
    are finite (the common case) the list itself, in one pass in C."""
    if all(map(math.isfinite, values)):
        return values, [False] * len(values)
    return list(map(stored_value, values)), list(map(math.isnan, values))


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


@dataclass(slots=True)
class Columns:
    """Metric points of one run as their ``metrics`` rows, a list per column (``ROW`` but the
    run's id), in the points' order; values as MLflow stores them (``stored_values``).

    The flusher's shape for points (server/flush/slices.py): a list per column costs no object
    per point beyond its values, where a tuple per point cost making it, taking it apart to bind
    it, and the garbage collector's walks over every one held (measured: the flusher's points
    2.3-2.5 µs each this way, 3.0-3.2 µs as tuples). Duplicates are left in: the inserts skip a
    row that is there already, one written earlier in the same statement included."""

    keys: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    nans: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def extend(self, other: Columns) -> None:
        """Appends ``other``'s points after these."""
        self.keys += other.keys
        self.values += other.values
        self.timestamps += other.timestamps
        self.steps += other.steps
        self.nans += other.nans

    def rows(self, run_id: str) -> list[Row]:
        """The points as ``metrics`` rows of ``run_id`` (columns ``ROW``)."""
        return list(
            zip(
                self.keys, self.values, self.timestamps, self.steps, self.nans,
                itertools.repeat(run_id), strict=False,
            )
        )  # fmt: skip


def points_columns(metrics: list[Point]) -> Columns:
    """The calls' points as ``metrics`` columns, in the calls' order."""
    values, nans = stored_values([float(m.value) for m in metrics])
    return Columns(
        [m.key for m in metrics],
        values,
        [int(m.timestamp) for m in metrics],
        [int(m.step) for m in metrics],
        nans,
    )


def latest(run_id: str, columns: Columns) -> list[dict[str, Any]]:
    """Each key's candidate for ``latest_metrics``: its first point with the greatest
    (step, timestamp, value)."""
    keys, steps, times, values = columns.keys, columns.steps, columns.timestamps, columns.values
    if keys.count(keys[0]) == len(keys):  # one key (the common case): in C, the first kept
        order = map(operator.neg, range(len(keys)))  # of equals, the earliest is the greatest
        *_, where = max(zip(steps, times, values, order, strict=True))
        best = {keys[0]: -where}
    else:
        best = {}
        for i, key in enumerate(keys):
            held = best.get(key)
            if held is None or (steps[i], times[i], values[i]) > (
                steps[held],
                times[held],
                values[held],
            ):
                best[key] = i
    return [
        dict(zip(ROW, (key, values[i], times[i], steps[i], columns.nans[i], run_id), strict=True))
        for key, i in best.items()
    ]


def last_per_key(run_id: str, tags: list[RunTag]) -> list[dict[str, Any]]:
    last = {t.key: t.value for t in tags}
    return [{"key": k, "value": v, "run_uuid": run_id} for k, v in last.items()]
