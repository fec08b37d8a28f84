"""``log_batch`` as set-based SQL: the rows MLflow's ``SqlAlchemyStore.log_batch`` writes,
in one transaction instead of three and a few statements instead of an ORM object per row.

What MLflow's store does, and how this writer gets the same rows
(mlflow/store/tracking/sqlalchemy_store.py, 3.17.2):

- Validation: MLflow's own functions, so the same calls fail with the same errors (a param
  value past 6000 characters and a tag value past 8000 are truncated, as there); points that
  are plainly valid (plain numbers, keys MLflow accepts) are told so without a call per point.
- The run must exist (RESOURCE_DOES_NOT_EXIST) and be active (INVALID_PARAMETER_VALUE).
- ``metrics``: NaN is stored as value 0 with ``is_nan``, +-inf as +-1.7976931348623157e308; a
  point whose whole primary key (key, timestamp, step, value, is_nan) is there already is
  skipped: ``INSERT ... ON CONFLICT DO NOTHING`` (PostgreSQL: ``COPY``, bulk/pg_copy.py).
- ``latest_metrics``: a key's latest point is the first one logged among those with the
  greatest (step, timestamp, value), the value as stored (NaN counts as 0): the batch's
  candidate per key, then ``ON CONFLICT DO UPDATE ... WHERE`` it is strictly greater.
- ``params``: a key logged before with another value refuses the whole call
  (INVALID_PARAMETER_VALUE, MLflow's message); the same value is a no-op.
- ``tags``: set or replaced, the last of a key in the call wins.

One transaction holds the call's params, metrics and tags, so a call is all or nothing (MLflow
commits params, metrics and tags apart): the ``trackbridge.flushed`` tag a call carries
(server/flush/progress.py) proves the whole call landed. ``log_calls`` writes many calls of a
run the same way (the rows they would leave one after another: duplicates across calls once,
the latest point over all of them, a param set by an earlier call binding the later ones), and
writers that meet share a transaction (server/flush/bulk/commit.py): a commit is what costs.
The run's row is locked first (``BEGIN IMMEDIATE`` on SQLite, ``SELECT ... FOR UPDATE`` on
PostgreSQL), so the params check and the writes see the same run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.tracking.dbmodels.models import (
    SqlLatestMetric,
    SqlMetric,
    SqlParam,
    SqlRun,
    SqlTag,
)
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import (
    _validate_batch_log_data,
    _validate_batch_log_limits,
    _validate_param_keys_unique,
    _validate_run_id,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.compiler import SQLCompiler

from server.flush.bulk.commit import GroupCommit
from server.flush.bulk.pg_copy import copy_metrics, copyable
from server.flush.bulk.rows import (
    ROW,
    Columns,
    Point,
    last_per_key,
    latest,
    plainly_valid,
    points_columns,
)
from server.flush.bulk.runs import NewRun, create_runs
from server.flush.bulk.sqlite_rows import insert_rows

_ROWS_PER_STATEMENT = 1000
"""Rows of one multi-row INSERT on PostgreSQL (6 parameters each, far below its 65535)."""
_RUNS: sa.Table = SqlRun.__table__
_METRICS: sa.Table = SqlMetric.__table__
_LATEST: sa.Table = SqlLatestMetric.__table__
_PARAMS: sa.Table = SqlParam.__table__
_TAGS: sa.Table = SqlTag.__table__


def create_engine(tracking_uri: str) -> sa.Engine:
    """An engine for the bulk writer's transactions (its own pool, beside MLflow's).

    On SQLite every transaction begins IMMEDIATE (takes the write lock first), so two writers
    never deadlock upgrading a read lock, and a busy database is waited for (30 s)."""
    if not tracking_uri.startswith("sqlite"):
        return sa.create_engine(tracking_uri, pool_pre_ping=True)
    engine = sa.create_engine(tracking_uri, connect_args={"timeout": 30.0})

    @sa.event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: object) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass(frozen=True, slots=True)
class Call:
    """One ``log_batch`` call's entries."""

    metrics: Sequence[Point] = ()
    params: Sequence[Param] = ()
    tags: Sequence[RunTag] = ()


class BulkWriter:
    """Writes ``log_batch`` calls into MLflow's tables (SQLite or PostgreSQL)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.commits = GroupCommit(engine.begin, together=engine.dialect.name == "sqlite")
        """Transactions, shared on SQLite by the writers that meet (server/flush/bulk/commit.py)."""
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        run = sa.select(_RUNS.c.lifecycle_stage).where(_RUNS.c.run_uuid == sa.bindparam("run_uuid"))
        if engine.dialect.name == "postgresql":
            run = run.with_for_update()
        # Compiled once: SQLAlchemy's statement handling costs more than these statements.
        self._run_sql = _Driver(engine, run)
        self._latest_sql = _Driver(engine, self._latest_upsert())
        self._tag_sql = _Driver(engine, self._tag_upsert())
        names = ", ".join(f'"{c}"' for c in ROW)
        # psycopg2's execute_values: one statement of many rows (its %s)
        self._points_sql = f"INSERT INTO metrics ({names}) VALUES %s ON CONFLICT DO NOTHING"

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None:
        """MLflow's ``log_batch``, in one transaction.

        Raises:
            MlflowException: What MLflow's store raises for the same call.
            sqlalchemy.exc.SQLAlchemyError: The database failed (worth trying again).
        """
        points = [Point(m.key, m.value, m.timestamp, m.step) for m in metrics]
        self.log_calls(run_id, [Call(points, params, tags)])

    def log_calls(self, run_id: str, calls: Sequence[Call]) -> None:
        """MLflow's ``log_batch`` for each of ``calls`` in turn, all in one transaction: the
        rows those calls would leave, or none of them.

        Raises:
            MlflowException: What MLflow's store raises for the first call it refuses
                (then nothing is written; the calls one by one write the others).
            sqlalchemy.exc.SQLAlchemyError: The database failed (worth trying again).
        """
        _validate_run_id(run_id)  # type: ignore[no-untyped-call]
        points: list[Point] = []
        params: list[list[Param]] = []
        tags: list[RunTag] = []
        for call in calls:
            valid_metrics = list(call.metrics)
            if not plainly_valid(valid_metrics):
                _validate_batch_log_data(valid_metrics, [], [])  # type: ignore[no-untyped-call]
            checked = _validate_batch_log_data([], list(call.params), list(call.tags))  # type: ignore[no-untyped-call]
            _validate_batch_log_limits(valid_metrics, checked[1], checked[2])  # type: ignore[no-untyped-call]
            _validate_param_keys_unique(checked[1])  # type: ignore[no-untyped-call]
            points += valid_metrics
            params.append(checked[1])  # values truncated as MLflow truncates them
            tags += checked[2]
        columns = points_columns(points)

        def write(conn: sa.Connection) -> None:
            self._check_run(conn, run_id)
            self._params(conn, run_id, params)
            self._points(conn, run_id, columns, tags)

        self.commits.run(write)

    def log_rows(self, run_id: str, columns: Columns, tags: Sequence[RunTag] = ()) -> None:
        """``log_batch`` calls of metric points only, given as their ``metrics`` columns (NaN
        and infinities as MLflow stores them, each key :func:`plain_metric_key`), all in one
        transaction, with ``tags``.

        Raises:
            MlflowException: What MLflow's store raises for the calls (the run is not active).
            sqlalchemy.exc.SQLAlchemyError: The database failed (worth trying again).
        """
        _validate_run_id(run_id)  # type: ignore[no-untyped-call]
        tagged = list(tags)

        def write(conn: sa.Connection) -> None:
            self._check_run(conn, run_id)
            self._points(conn, run_id, columns, tagged)

        self.commits.run(write)

    def _points(
        self, conn: sa.Connection, run_id: str, columns: Columns, tags: list[RunTag]
    ) -> None:
        if columns:
            self._insert_points(conn, run_id, columns)
            self._latest_sql.run(conn, latest(run_id, columns))
        if tags:
            self._tag_sql.run(conn, last_per_key(run_id, tags))

    def terminate(self, run_id: str, status: str, end_time_ms: int) -> None:
        """MLflow's ``update_run_info`` of a status and end time (``set_terminated``): the
        run must exist and be active."""
        _validate_run_id(run_id)  # type: ignore[no-untyped-call]

        def write(conn: sa.Connection) -> None:
            self._check_run(conn, run_id)
            update = _RUNS.update().where(_RUNS.c.run_uuid == run_id)
            conn.execute(update.values(status=status, end_time=end_time_ms))

        self.commits.run(write)

    def children_running(self, experiment_id: str, parent_id: str) -> bool:
        """Whether an active run of the experiment tagged ``mlflow.parentRunId`` =
        ``parent_id`` is RUNNING (MLflow's ``search_runs`` of that filter, as one query)."""
        query = (
            sa.select(_RUNS.c.run_uuid)
            .join(_TAGS, _TAGS.c.run_uuid == _RUNS.c.run_uuid)
            .where(
                _RUNS.c.experiment_id == int(experiment_id),
                _RUNS.c.lifecycle_stage == "active",
                _RUNS.c.status == "RUNNING",
                _TAGS.c.key == MLFLOW_PARENT_RUN_ID,
                _TAGS.c.value == parent_id,
            )
            .limit(1)
        )
        return self.commits.run(lambda conn: conn.execute(query).first() is not None)

    def create_runs(self, experiment_id: str, runs: Sequence[NewRun]) -> list[str]:
        """MLflow's ``create_run`` for each of ``runs``, in one transaction; their ids."""
        return self.commits.run(lambda conn: create_runs(conn, experiment_id, runs))

    def _insert_points(self, conn: sa.Connection, run_id: str, columns: Columns) -> None:
        """The points' rows, those there already skipped, straight through the driver:
        SQLite's multi-row ``INSERT ... ON CONFLICT DO NOTHING`` (bulk/sqlite_rows.py),
        PostgreSQL's ``COPY``
        (server/flush/bulk/pg_copy.py; psycopg2's multi-row ``execute_values`` for a key COPY
        would need escaped). SQLAlchemy's per-row parameter processing costs more than the
        insert."""
        with contextlib.closing(conn.connection.cursor()) as cursor:  # the same transaction
            if self.engine.dialect.name == "sqlite":
                insert_rows(cursor, run_id, columns)
                return
            from psycopg2.extras import execute_values  # PostgreSQL's driver, imported for it

            if copyable(columns):
                copy_metrics(cursor, run_id, columns)
            else:
                rows = columns.rows(run_id)
                execute_values(cursor, self._points_sql, rows, page_size=_ROWS_PER_STATEMENT)

    def _check_run(self, conn: sa.Connection, run_id: str) -> None:
        stages = [row[0] for row in self._run_sql.run(conn, [{"run_uuid": run_id}])]
        if not stages:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        if stages[0] != "active":
            raise MlflowException(
                f"The run {run_id} must be in the 'active' state. Current state is {stages[0]}.",
                INVALID_PARAMETER_VALUE,
            )

    def _params(self, conn: sa.Connection, run_id: str, calls: list[list[Param]]) -> None:
        """Each call's params: a key logged before (in the database or an earlier call) with
        another value refuses the call, with MLflow's message; the same value is a no-op."""
        keys = list({p.key for call in calls for p in call})
        if not keys:
            return
        query = sa.select(_PARAMS.c.key, _PARAMS.c.value).where(
            _PARAMS.c.run_uuid == run_id, _PARAMS.c.key.in_(keys)
        )
        existing: dict[str, str] = {key: value for key, value in conn.execute(query)}
        new: list[dict[str, Any]] = []
        for params in calls:
            conflicts = [
                {"key": p.key, "old_value": existing[p.key], "new_value": p.value}
                for p in params
                if p.key in existing and existing[p.key] != p.value
            ]
            if conflicts:
                raise MlflowException(
                    "Changing param values is not allowed. Params were already"
                    f" logged='{conflicts}' for run ID='{run_id}'.",
                    INVALID_PARAMETER_VALUE,
                )
            for p in params:
                if p.key not in existing:
                    existing[p.key] = p.value
                    new.append({"key": p.key, "value": p.value, "run_uuid": run_id})
        if new:
            conn.execute(sa.insert(_PARAMS), new)

    def _latest_upsert(self) -> sa.Insert:
        columns = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
        stmt = self._insert(_LATEST).values({c: sa.bindparam(c) for c in columns})
        new = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[_LATEST.c.key, _LATEST.c.run_uuid],
            set_={
                "value": new.value,
                "timestamp": new.timestamp,
                "step": new.step,
                "is_nan": new.is_nan,
            },
            where=sa.tuple_(new.step, new.timestamp, new.value)
            > sa.tuple_(_LATEST.c.step, _LATEST.c.timestamp, _LATEST.c.value),
        )

    def _tag_upsert(self) -> sa.Insert:
        stmt = self._insert(_TAGS).values(
            {c: sa.bindparam(c) for c in ("key", "value", "run_uuid")}
        )
        return stmt.on_conflict_do_update(
            index_elements=[_TAGS.c.key, _TAGS.c.run_uuid], set_={"value": stmt.excluded.value}
        )


class _Driver:
    """A statement compiled once, run straight through the database driver."""

    def __init__(self, engine: sa.Engine, stmt: sa.ClauseElement) -> None:
        compiled = stmt.compile(dialect=engine.dialect)
        assert isinstance(compiled, SQLCompiler)
        self._sql = str(compiled)
        self._names = compiled.positiontup  # None: named parameters (psycopg2's pyformat)

    def run(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> list[Any]:
        """Runs the statement for each row; the rows it returns when run once."""
        names = self._names
        params = rows if names is None else [tuple(r[n] for n in names) for r in rows]
        if len(params) != 1:
            conn.exec_driver_sql(self._sql, params)
            return []
        result = conn.exec_driver_sql(self._sql, params[0])
        return list(result) if result.returns_rows else []
