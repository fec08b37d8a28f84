"""The MLflow sink whose ``log`` goes straight into MLflow's database (server/flush/bulk/writer.py).

Everything else (experiments, run creation and ends, reads) goes through MLflow's client as
with :class:`MlflowSink`. Whether the database may be written is decided once, at start (at
the first ``log`` if the database could not be reached then), and said in one log line; on any
doubt every call goes through MLflow's client.

SQLAlchemy and MLflow's table models (~0.7 CPU s of imports) load when a sink first looks at
a database (``decide``): a receiver whose MLflow is a server never loads them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from mlflow.entities import Param as MlflowParam
from mlflow.entities import RunTag
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from bridge.events import Metric, Param, RunStatus, Tag
from bridge.limits import (
    MAX_ENTITIES_PER_BATCH,
    MAX_METRICS_PER_BATCH,
    LogBatchChunk,
    split_log_batch,
)
from server.flush.bulk.rows import Columns, Point
from server.flush.bulk.schema import DIALECTS, dialect_of
from server.flush.run_tags import TAG_FLUSHED, TAG_HEARD
from server.flush.sink import MlflowSink, RunRef, RunRequest

if TYPE_CHECKING:
    from server.flush.bulk.writer import BulkWriter, Call

_logger = logging.getLogger(__name__)

SHARED_COMMIT_TURNS = 16
"""Runs' turns at once when their writes share SQLite's commits (server/flush/bulk/commit.py):
a commit costs ~10 ms whatever it holds, so the more turns meet at one, the fewer commits a
cycle of many runs makes. Only one writes at a time; the others prepare their slices."""


def open_sink(
    tracking_uri: str,
    *,
    bulk: bool,
    artifact_location: str | None = None,
    receiver_id: str = "",
) -> MlflowSink:
    """The receiver's MLflow sink: a :class:`BulkSink` when ``bulk`` is on and the tracking
    URI is a database the bulk writer knows, else MLflow's client alone."""
    dialect = dialect_of(tracking_uri)
    if bulk and dialect in DIALECTS:
        sink = BulkSink(tracking_uri, artifact_location=artifact_location, receiver_id=receiver_id)
        sink.decide()  # said at start, unless the database is away (then at the first call)
        return sink
    if dialect:
        why = "turned off (--no-bulk-write)" if not bulk else f"not for {dialect}"
        _logger.info("bulk writer %s: metrics go through MLflow's SQL store", why)
    return MlflowSink(tracking_uri, artifact_location=artifact_location, receiver_id=receiver_id)


class BulkSink(MlflowSink):
    """An :class:`MlflowSink` whose ``log_batch`` calls are set-based SQL transactions."""

    def __init__(
        self, tracking_uri: str, artifact_location: str | None = None, receiver_id: str = ""
    ) -> None:
        super().__init__(tracking_uri, artifact_location=artifact_location, receiver_id=receiver_id)
        self._deciding = threading.Lock()
        self._writer: BulkWriter | None = None
        self._decided = False

    @property
    def shares_commits(self) -> bool:
        """Whether the writers that meet share one commit (SQLite, server/flush/bulk/commit.py)."""
        return dialect_of(self.tracking_uri) == "sqlite"

    def turns_at_once(self, workers: int) -> int:
        """At least :data:`SHARED_COMMIT_TURNS` when the writers share commits (SQLite); one
        writer stays one (the turns on the flusher's thread, in order)."""
        if workers > 1 and self.shares_commits:
            return max(workers, SHARED_COMMIT_TURNS)
        return workers

    @property
    def bulk(self) -> bool | None:
        """Whether calls go straight into the database (None: not decided yet)."""
        return (self._writer is not None) if self._decided else None

    def log(self, run_id: str, chunk: LogBatchChunk, progress: str = "") -> None:
        """Writes one chunk in one transaction, its ``progress`` tag with it."""
        writer = self._writer if self._decided else self.decide()
        if writer is None or _names_run(chunk):
            super().log(run_id, chunk, progress)  # a run name also renames the run's row
            return
        if not chunk.metrics and not chunk.params and not chunk.tags and not progress:
            return  # MLflow's client makes no call either
        writer.log_calls(run_id, [_call(chunk, progress)])

    def terminate(self, run_id: str, status: RunStatus, end_time_ms: int) -> None:
        """Ends a run with one UPDATE of its row, as MLflow's ``set_terminated``."""
        writer = self._writer if self._decided else self.decide()
        if writer is None:
            super().terminate(run_id, status, end_time_ms)
            return
        writer.terminate(run_id, status.value, end_time_ms or int(time.time() * 1000))

    def children_running(self, parent: RunRef) -> bool:
        """Whether any child run of ``parent`` is RUNNING: one query."""
        writer = self._writer if self._decided else self.decide()
        if writer is None:
            return super().children_running(parent)
        return writer.children_running(parent.experiment_id, parent.run_id)

    def mark_heard(self, run: RunRef, heard_ms: int) -> None:
        """Records on the run when this receiver last heard from its client (a tag)."""
        writer = self._writer if self._decided else self.decide()
        if writer is None:
            super().mark_heard(run, heard_ms)
            return
        from server.flush.bulk.writer import Call

        writer.log_calls(run.run_id, [Call(tags=[RunTag(TAG_HEARD, str(heard_ms))])])

    def together(self, entries: Sequence[Metric | Param | Tag]) -> bool:
        """Whether :meth:`log_calls` writes these entries' calls in one transaction."""
        writer = self._writer if self._decided else self.decide()
        return writer is not None and not any(
            isinstance(e, Tag) and e.key == MLFLOW_RUN_NAME for e in entries
        )

    def log_calls(self, run_id: str, chunks: Sequence[LogBatchChunk], progress: str = "") -> None:
        """Writes the chunks (one ``log_batch`` call each) in one transaction, ``progress``
        with the last; only when :meth:`together` said so."""
        writer = self._writer
        assert writer is not None, "log_calls without together()"
        last = len(chunks) - 1
        writer.log_calls(
            run_id, [_call(c, progress if i == last else "") for i, c in enumerate(chunks)]
        )

    def log_rows(self, run_id: str, columns: Columns, progress: str = "") -> None:
        """Writes metric points given as ``metrics`` columns (server/flush/slices.py) in one
        transaction, ``progress`` with them; only when the bulk writer is on."""
        writer = self._writer
        assert writer is not None, "log_rows with the bulk writer off"
        writer.log_rows(run_id, columns, [RunTag(TAG_FLUSHED, progress)] if progress else ())

    def create_runs(self, exp_id: str, runs: list[RunRequest]) -> list[str] | None:
        """Creates the runs in one transaction (None when MLflow's store is to create them)."""
        writer = self._writer if self._decided else self.decide()
        if writer is None:
            return None
        from server.flush.bulk.runs import NewRun

        return writer.create_runs(exp_id, [NewRun(*run) for run in runs])

    def decide(self) -> BulkWriter | None:
        """Looks at the database once (its dialect, tables and schema revision) and says
        whether calls go straight into it; None while undecided or when they do not."""
        import sqlalchemy as sa

        from server.flush.bulk.schema import refusal
        from server.flush.bulk.writer import BulkWriter, create_engine

        with self._deciding:
            if self._decided:
                return self._writer
            engine = create_engine(self.tracking_uri)
            try:
                why = refusal(engine)
            except sa.exc.OperationalError:
                engine.dispose()
                return None  # the database is away: decided on a later call
            self._decided = True
            if why:
                engine.dispose()
                _logger.warning(
                    "bulk writer off: %s; metrics go through MLflow's SQL store (slower)", why
                )
                return None
            self._writer = BulkWriter(engine)
            _logger.info(
                "bulk writer on: metrics, params and tags go straight into MLflow's %s"
                " database, one transaction per call",
                engine.dialect.name,
            )
            return self._writer


def transactions(
    sink: MlflowSink, entries: list[Metric | Param | Tag], round_key: str
) -> list[list[LogBatchChunk]]:
    """The ``log_batch`` calls of ``entries``, grouped by transaction: all in one for the bulk
    writer, one each through MLflow's client."""
    if isinstance(sink, BulkSink) and sink.together(entries):
        return [calls_of(entries, round_key)]
    return [[chunk] for chunk in split_log_batch(entries, reserve_tags=1, round_key=round_key)]


def log_together(
    sink: MlflowSink, run_id: str, group: list[LogBatchChunk], progress: str = ""
) -> None:
    """Writes a group of :func:`transactions` (``progress`` the mark of its last call)."""
    if len(group) == 1:
        sink.log(run_id, group[0], progress)
        return
    assert isinstance(sink, BulkSink), "several calls in one transaction need the bulk writer"
    sink.log_calls(run_id, group, progress)


def calls_of(entries: list[Metric | Param | Tag], round_key: str) -> list[LogBatchChunk]:
    """The ``log_batch`` calls of ``entries`` (``split_log_batch``), told fast for plain metric
    points: a call's request size matters to MLflow's server, not to its database."""
    if any(type(e) is not Metric or (round_key and e.round) for e in entries):
        return list(split_log_batch(entries, reserve_tags=1, round_key=round_key))
    points = cast(list[Metric], entries)  # every one a Metric (above)
    per_call = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - 1)  # room for the mark
    return [
        LogBatchChunk(tuple(points[i : i + per_call]), (), (), len(points[i : i + per_call]))
        for i in range(0, len(points), per_call)
    ]


def _names_run(chunk: LogBatchChunk) -> bool:
    return any(t.key == MLFLOW_RUN_NAME for t in chunk.tags)


def _call(chunk: LogBatchChunk, progress: str) -> Call:
    from server.flush.bulk.writer import Call

    tags = [RunTag(t.key, t.value) for t in chunk.tags]
    if progress:
        tags.append(RunTag(TAG_FLUSHED, progress))
    return Call(
        metrics=[Point(m.key, m.value, m.timestamp_ms, m.step) for m in chunk.metrics],
        params=[MlflowParam(p.key, p.value) for p in chunk.params],
        tags=tags,
    )
