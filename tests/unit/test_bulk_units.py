"""When the receiver uses the bulk writer: its switch (flag, config, environment) and its choice
of sink, including the fall back to MLflow's store on a schema it does not know."""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bridge.events import Metric
from bridge.limits import LogBatchChunk
from server.config import ReceiverConfig
from server.flush.bulk import BulkSink, open_sink
from server.flush.bulk.rows import ROW, Point, latest
from server.flush.bulk.schema import dialect_of
from server.flush.bulk.sink import SHARED_COMMIT_TURNS
from server.flush.bulk.sqlite_rows import insert_rows, statement_sizes
from server.flush.bulk.writer import BulkWriter, Call, create_engine
from server.flush.refusals import is_permanent
from server.flush.run_tags import TAG_FLUSHED
from tests.support.bulk import columns_of, metric_row
from tests.support.procs import wait_until

pytestmark = [pytest.mark.timeout(120)]


def test_bulk_write_is_on_unless_turned_off() -> None:
    assert ReceiverConfig.resolve(env={}).bulk_write is True
    assert ReceiverConfig.resolve(env={"TRACKBRIDGE_BULK_WRITE": "0"}).bulk_write is False
    assert ReceiverConfig.resolve(env={"TRACKBRIDGE_BULK_WRITE": "off"}).bulk_write is False
    on = ReceiverConfig.resolve(bulk_write=True, env={"TRACKBRIDGE_BULK_WRITE": "false"})
    assert on.bulk_write is True  # the flag wins over the environment
    with pytest.raises(ValueError, match="TRACKBRIDGE_BULK_WRITE must be one of"):
        ReceiverConfig.resolve(env={"TRACKBRIDGE_BULK_WRITE": "maybe"})


def test_dialects() -> None:
    assert dialect_of("sqlite:////tmp/m.db") == "sqlite"
    assert dialect_of("postgresql+psycopg2://u:p@h/db") == "postgresql"
    assert dialect_of("mysql://u@h/db") == "mysql"
    assert dialect_of("http://127.0.0.1:5000") == "http"
    assert dialect_of("./mlruns") == ""


def test_only_a_known_database_gets_the_bulk_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    with caplog.at_level(logging.INFO, logger="server.flush.bulk.sink"):
        plain = open_sink(uri, bulk=False)
        assert not isinstance(plain, BulkSink)
        assert "bulk writer turned off (--no-bulk-write)" in caplog.text
        sink = open_sink(uri, bulk=True)
    assert isinstance(sink, BulkSink) and sink.bulk is True
    assert caplog.text.count("bulk writer on") == 1
    assert not isinstance(open_sink("http://127.0.0.1:9", bulk=True), BulkSink)
    # Its writes share SQLite's commits: more runs' turns at once meet in each commit.
    assert sink.shares_commits and sink.turns_at_once(4) == SHARED_COMMIT_TURNS > 4
    assert sink.turns_at_once(1) == 1  # one writer stays one (its turns in order)
    assert plain.turns_at_once(4) == 4


def test_an_unknown_schema_revision_goes_through_mlflow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    engine.dispose()
    with caplog.at_level(logging.INFO, logger="server.flush.bulk.sink"):
        sink = open_sink(uri, bulk=True)
        chunk = LogBatchChunk((Metric("x", 1.0, step=0, timestamp_ms=5),), (), ())
        sink.log(run_id, chunk, "1 r:abcd")
        sink.log(run_id, chunk)
    assert isinstance(sink, BulkSink) and sink.bulk is False
    assert caplog.text.count("bulk writer off: schema revision f00dfeedbeef") == 1
    run = client.get_run(run_id)
    assert run.data.metrics == {"x": 1.0}
    assert run.data.tags[TAG_FLUSHED] == "1 r:abcd"


def test_writers_that_meet_share_one_commit_and_a_refusal_stays_with_its_run(
    tmp_path: Path,
) -> None:
    """Writers arriving while another commits go in one transaction, each in a savepoint: the
    run MLflow refuses (deleted) raises to its own writer alone, the others' rows commit."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("e")
    runs = [client.create_run(exp).info.run_id for _ in range(3)]
    client.delete_run(runs[2])
    writer = BulkWriter(create_engine(uri))
    entered, release = threading.Event(), threading.Event()

    def hold(_conn: sa.Connection) -> None:
        entered.set()
        assert release.wait(30)

    outcomes: dict[str, str] = {}

    def log(run_id: str) -> None:
        try:
            writer.log_calls(run_id, [Call([Point("x", 1.0, 5, 0)], [], [RunTag("t", "v")])])
            outcomes[run_id] = "ok"
        except MlflowException as exc:
            outcomes[run_id] = exc.error_code

    holder = threading.Thread(target=writer.commits.run, args=(hold,))
    holder.start()
    assert entered.wait(30)
    threads = [threading.Thread(target=log, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    wait_until(lambda: writer.commits.waiting == 3, 30, what="three writers waiting")
    release.set()
    for thread in [holder, *threads]:
        thread.join(30)
    assert outcomes == {runs[0]: "ok", runs[1]: "ok", runs[2]: "INVALID_PARAMETER_VALUE"}
    assert writer.commits.commits == 2  # the holder's, then the three writers' together
    for run_id, points in zip(runs, (1, 1, 0), strict=True):
        assert len(client.get_metric_history(run_id, "x")) == points
        assert ("t" in client.get_run(run_id).data.tags) is bool(points)
    writer.engine.dispose()


def test_more_turns_than_mlflows_connection_pool_wait_and_are_never_refused(
    tmp_path: Path,
) -> None:
    """With SHARED_COMMIT_TURNS turns at once on SQLite, more threads than MLflow's connection
    pool holds (5 + 10) may call MLflow's own store at once (a run's end, a logged model): they
    wait for a connection; one that waits past the pool's timeout gets an error that is tried
    again (MLflow words it BAD_REQUEST), never a refusal for good that would quarantine a run."""
    sink = open_sink(f"sqlite:///{tmp_path / 'm.db'}", bulk=True)
    client = sink.client
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    pool = client._tracking_client.store.engine.pool
    capacity = pool.size() + pool._max_overflow  # type: ignore[attr-defined]
    turns = sink.turns_at_once(4)
    assert turns > capacity
    held = [pool.connect() for _ in range(capacity)]  # every connection of MLflow's pool busy
    started = threading.Barrier(turns + 1)
    errors: list[BaseException] = []

    def turn(i: int) -> None:
        started.wait(30)
        try:
            client.set_tag(run_id, f"turn-{i}", "v")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(turns)]
    for thread in threads:
        thread.start()
    started.wait(30)
    for connection in held:  # the turns waiting for the pool go on
        connection.close()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert {f"turn-{i}" for i in range(turns)} <= client.get_run(run_id).data.tags.keys()

    pool._timeout = 0.05  # type: ignore[attr-defined]  # fault: the wait runs out at once
    held = [pool.connect() for _ in range(capacity)]
    try:
        with pytest.raises(MlflowException) as waited:
            client.set_tag(run_id, "late", "v")
    finally:
        for connection in held:
            connection.close()
    assert waited.value.error_code == "BAD_REQUEST" and not is_permanent(waited.value)


@settings(max_examples=200, deadline=None)
@given(
    points=st.lists(
        st.tuples(
            st.sampled_from(["x", "y"]),
            st.sampled_from([0.0, -0.0, 1.0, 2.0]),
            st.integers(0, 2),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=20,
    ),
    is_nan=st.booleans(),
)
def test_latest_is_each_keys_first_point_of_the_greatest_step_time_and_value(
    points: list[tuple[str, float, int, int]], is_nan: bool
) -> None:
    """MLflow's rule, one key or several: the first row logged among those with the greatest
    (step, timestamp, value)."""
    rows = [(k, v, t, s, is_nan and v == 0.0, "r") for k, v, t, s in points]
    want: dict[str, Any] = {}
    for row in rows:
        held = want.get(row[0])
        if held is None or (row[3], row[2], row[1]) > (held[3], held[2], held[1]):
            want[row[0]] = row
    got = latest("r", columns_of(rows))
    assert sorted(got, key=lambda r: r["key"]) == [
        dict(zip(ROW, want[key], strict=True)) for key in sorted(want)
    ]
    for candidate in got:  # the first of equals: -0.0 and 0.0 compare equal, the sign tells
        assert math.copysign(1, candidate["value"]) == math.copysign(1, want[candidate["key"]][1])


def test_statement_sizes_stay_within_sqlites_parameter_limit() -> None:
    assert statement_sizes(250_000) == (4096, 1024, 256, 64, 16, 4, 1)
    assert statement_sizes(999) == (64, 16, 4, 1)  # SQLite before 3.32: 999 parameters
    assert statement_sizes(6) == (1,)


@pytest.mark.parametrize(
    ("count", "nan"),
    [(1, True), (4096 + 1024 + 3 * 256 + 7, True), (2 * 4096, True), (2 * 4096, False)],
)
def test_multi_row_inserts_leave_the_rows_executemany_leaves(
    tmp_path: Path, count: int, nan: bool
) -> None:
    """The same rows (NaN as MLflow stores it, -0.0, the largest doubles), each once, those
    there already skipped; ``is_nan`` bound per row when one is NaN, written as 0 when none is."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    values = [0.1 * i for i in range(count)]
    values[: min(4, count)] = [-0.0, 1.7976931348623157e308, 0.0, 1 / 3][:count]
    rows = [metric_row(run_id, "x", v, 1000 + i, i) for i, v in enumerate(values)]
    if nan:
        rows[-1] = metric_row(run_id, "x", math.nan, 1, 2)
    rows.insert(len(rows) // 2, rows[0])  # twice in one statement: written once
    columns = ", ".join(f'"{c}"' for c in ROW)
    insert = f"INSERT INTO metrics ({columns}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
    select = f"SELECT {columns} FROM metrics ORDER BY step, timestamp"
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    table = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'metrics'").fetchone()[0]
    conn.executemany(insert, rows[::3])  # there already
    conn.execute("BEGIN IMMEDIATE")
    insert_rows(conn.cursor(), run_id, columns_of(rows))
    conn.execute("COMMIT")
    stored = conn.execute(select).fetchall()
    conn.close()
    alike = sqlite3.connect(":memory:")  # the same table, one executemany row at a time
    alike.execute(table)
    alike.executemany(insert, rows[::3])
    alike.executemany(insert, rows)
    want = alike.execute(select).fetchall()
    alike.close()
    assert len(stored) == count
    assert stored == want
    assert [math.copysign(1, r[1]) for r in stored] == [math.copysign(1, r[1]) for r in want]
