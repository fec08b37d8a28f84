"""An in-memory MLflow that fails on command, for the flusher's in-process property tests.

It implements the part of ``MlflowClient`` that ``MlflowSink`` and the flusher's helpers call,
with MLflow's semantics where they matter to the receiver: an identical metric point is stored
once, a param may be logged again only with the same value, a tag is overwritten, deleting a
tag the run does not have fails (RESOURCE_DOES_NOT_EXIST), a search filters by tags and status.
Every call first consults a fault schedule (one action per call, in call order; past its end
every call succeeds):

- ``ok``: the call is applied and answered;
- ``fail``: a transient error (MLflow down, 503, a timeout) before anything is applied;
- ``lost``: the call is applied, then the answer is lost (the same transient errors);
- ``kill``/``kill_after``: the receiver dies (:class:`Killed`) before/after the call is applied;
  every later call raises it too, until :meth:`FakeMlflow.revive` (a restart).

Its state survives a restart of the receiver, as MLflow's does.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

ACTIONS = ("ok", "fail", "lost", "kill", "kill_after")
_FILTER = re.compile(r"(?:tags\.`([^`]+)`|attributes\.(\w+)) = '((?:[^'\\]|\\.)*)'")


class Killed(BaseException):
    """The receiver died at a call boundary (a kill -9): nothing of it runs on."""


def _transient(n: int) -> Exception:
    kinds: list[Exception] = [
        MlflowException("503 Service Unavailable", error_code=TEMPORARILY_UNAVAILABLE),
        ConnectionError("connection refused"),
        TimeoutError("read timed out"),
    ]
    return kinds[n % len(kinds)]


class _Page(list[Any]):
    token: str | None = None


@dataclass
class FakeRun:
    """One MLflow run: what the fake stores of it."""

    run_id: str
    experiment_id: str
    name: str
    start_time: int
    status: str = "RUNNING"
    end_time: int | None = None
    lifecycle_stage: str = "active"
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    """Distinct points in the order MLflow first stored them."""
    writes: int = 0
    """Metric points received, resent ones included."""

    def view(self) -> Any:
        info = SimpleNamespace(
            run_id=self.run_id,
            experiment_id=self.experiment_id,
            run_name=self.name,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            lifecycle_stage=self.lifecycle_stage,
        )
        return SimpleNamespace(info=info, data=SimpleNamespace(tags=dict(self.tags)))


class FakeMlflow:
    """The fake store and client (``MlflowSink._client``)."""

    def __init__(self, schedule: Sequence[str] = (), bad_runs: frozenset[str] = frozenset()):
        self.schedule = list(schedule)
        self.bad_runs = bad_runs
        """Run names whose every write fails (transiently), for ever."""
        self.calls = 0
        self.dead = False
        self.experiments: dict[str, SimpleNamespace] = {
            "0": SimpleNamespace(
                experiment_id="0", name="Default", lifecycle_stage="active", creation_time=1
            )
        }
        self.runs: dict[str, FakeRun] = {}
        self._ids = itertools.count(1)

    def revive(self) -> None:
        """The receiver was restarted: calls reach MLflow again."""
        self.dead = False

    def _act(self, apply: Any, run_id: str = "") -> Any:
        if self.dead:
            raise Killed
        index, self.calls = self.calls, self.calls + 1
        action = self.schedule[index] if index < len(self.schedule) else "ok"
        run = self.runs.get(run_id)
        if run is not None and run.name in self.bad_runs:
            raise _transient(index)
        if action == "kill":
            self.dead = True
            raise Killed
        if action == "fail":
            raise _transient(index)
        result = apply()
        if action == "kill_after":
            self.dead = True
            raise Killed
        if action == "lost":
            raise _transient(index)
        return result

    def _run(self, run_id: str) -> FakeRun:
        run = self.runs.get(run_id)
        if run is None:
            raise MlflowException(f"Run '{run_id}' not found", error_code=RESOURCE_DOES_NOT_EXIST)
        return run

    # -- experiments -----------------------------------------------------------------------------

    def get_experiment_by_name(self, name: str) -> Any:
        def apply() -> Any:
            return next((e for e in self.experiments.values() if e.name == name), None)

        return self._act(apply)

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        def apply() -> str:
            if any(e.name == name for e in self.experiments.values()):
                raise MlflowException(f"{name} exists", error_code=INVALID_PARAMETER_VALUE)
            exp_id = str(len(self.experiments))
            self.experiments[exp_id] = SimpleNamespace(
                experiment_id=exp_id, name=name, lifecycle_stage="active", creation_time=2
            )
            return exp_id

        result: str = self._act(apply)
        return result

    def get_experiment(self, experiment_id: str) -> Any:
        return self._act(lambda: self.experiments[experiment_id])

    def search_experiments(self, max_results: int = 1000, page_token: str | None = None) -> Any:
        return self._act(lambda: _Page(self.experiments.values()))

    # -- runs ------------------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str,
        start_time: int | None = None,
        tags: dict[str, str] | None = None,
        run_name: str | None = None,
    ) -> Any:
        def apply() -> Any:
            run_id = f"run{next(self._ids):04d}"
            run = FakeRun(run_id, experiment_id, run_name or run_id, start_time or 0)
            run.tags.update(tags or {})
            self.runs[run_id] = run
            return run.view()

        return self._act(apply)

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Any:
        conditions = _FILTER.findall(filter_string)
        assert len(conditions) == filter_string.count(" = "), filter_string

        def matches(run: FakeRun) -> bool:
            for tag, attribute, quoted in conditions:
                value = re.sub(r"\\(.)", r"\1", quoted)
                have = run.tags.get(tag) if tag else getattr(run, attribute)
                if have != value:
                    return False
            return True

        def apply() -> Any:
            return _Page(
                r.view()
                for r in self.runs.values()
                if r.experiment_id in experiment_ids
                and r.lifecycle_stage == "active"
                and matches(r)
            )

        return self._act(apply)

    def get_run(self, run_id: str) -> Any:
        return self._act(lambda: self._run(run_id).view(), run_id)

    def update_run(self, run_id: str, status: str | None = None, name: str | None = None) -> None:
        def apply() -> None:
            run = self._run(run_id)
            run.status = status or run.status
            run.name = name or run.name

        self._act(apply, run_id)

    def set_terminated(
        self, run_id: str, status: str | None = None, end_time: int | None = None
    ) -> None:
        def apply() -> None:
            run = self._run(run_id)
            run.status, run.end_time = status or "FINISHED", end_time

        self._act(apply, run_id)

    def delete_run(self, run_id: str) -> None:
        def apply() -> None:
            self._run(run_id).lifecycle_stage = "deleted"

        self._act(apply, run_id)

    def set_tag(self, run_id: str, key: str, value: str, synchronous: bool = True) -> None:
        self._act(lambda: self._run(run_id).tags.__setitem__(key, value), run_id)

    def delete_tag(self, run_id: str, key: str) -> None:
        def apply() -> None:
            run = self._run(run_id)
            if key not in run.tags:  # as MLflow's stores: so a retried delete fails
                raise MlflowException(
                    f"No tag with name: {key} in run with id {run_id}",
                    error_code=RESOURCE_DOES_NOT_EXIST,
                )
            del run.tags[key]

        self._act(apply, run_id)

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Any] = (),
        params: Sequence[Any] = (),
        tags: Sequence[Any] = (),
        synchronous: bool = True,
    ) -> None:
        def apply() -> None:
            run = self._run(run_id)
            for p in params:  # MLflow checks params first and writes nothing on a conflict
                if run.params.get(p.key, p.value) != p.value:
                    raise MlflowException(
                        f"param {p.key} changed", error_code=INVALID_PARAMETER_VALUE
                    )
            for p in params:
                run.params[p.key] = p.value
            seen = set(run.metrics)
            for m in metrics:
                point = (m.key, m.value, m.timestamp, m.step)
                run.writes += 1
                if point not in seen:
                    seen.add(point)
                    run.metrics.append(point)
            for t in tags:  # committed after params and metrics (server/flush/run_tags.py)
                run.tags[t.key] = t.value

        self._act(apply, run_id)
