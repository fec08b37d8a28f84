"""The bulk writer against MLflow's own SQL store: the same event streams (random and
adversarial: NaN, +-inf, duplicate points, out-of-order steps, keys at and past MLflow's
limits, param conflicts, runs ended, resumed, deleted) go through ``SqlAlchemyStore.log_batch``
into one database and through the bulk writer into another (a run's consecutive calls in one
transaction, ``log_calls``); the tables must hold the same rows (run ids aside) and MLflow's
read API must answer the same, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from mlflow.entities import Metric, Param, RunTag

from server.flush.bulk.schema import VERIFIED_REVISIONS, refusal
from server.flush.bulk.writer import create_engine
from tests.support.bulk import Side, bulk_side, mlflow_side, play, reads, streams, tables
from tests.support.deploy import create_database, start_postgres, stop_postgres

pytestmark = [pytest.mark.timeout(600)]

EXAMPLES = 40

ADVERSARIAL: list[tuple[Any, ...]] = [
    ("log", 0, [Metric("loss", float("nan"), 1, 0), Metric("loss", 0.0, 1, 0),
                Metric("loss", float("nan"), 1, 0), Metric("loss", float("inf"), 2, 5),
                Metric("loss", 1.7976931348623157e308, 2, 5), Metric("loss", 3.0, 9, 4)],
     [Param("lr", "0.1")], [RunTag("note", "a"), RunTag("note", "b")]),
    ("log", 0, [Metric("loss", -1.0, 0, 7), Metric("loss", 0.0, 1, 0)],
     [Param("lr", "0.2"), Param("opt", "adam")], []),
    ("log", 0, [Metric("loss", 2.0, 0, 7)], [Param("lr", "0.1"), Param("opt", "adam")], []),
    ("end", 0), ("log", 0, [Metric("loss", 5.0, 3, 9)], [], []),
    ("delete", 1), ("log", 1, [Metric("loss", 1.0, 0, 0)], [], []), ("restore", 1),
    ("log", 1, [Metric("x" * 251, 1.0, 0, 0)], [], []),
    ("resume", 0), ("log", 0, [Metric("loss", 5.0, 3, 9), Metric("loss", 5.0, 3, 9)], [], []),
    ("log", 2, [Metric("a b", 1.0, 5, 2), Metric("a b", 9.0, 1, 2)], [], []),
    ("log", 2, [Metric("loss", 1.0, 5, 2), Metric("loss", 2.0, 6, 2), Metric("loss", 1.0, -1, 2)],
     [], []),
    ("log", 2, [Metric("loss", 1.0, 5, 2), Metric("loss", True, 6, 2)], [], []),
    ("log", 2, [Metric("loss", 7, 5, 2), Metric("bad..key/", 1.0, 6, 2)], [], []),
    ("log", 2, [Metric("acc/top1", 1.0, 5, 2)], [], []),
    ("log", 2, [Metric("acc/top1", 9.0, 1, 2)], [], []),
    ("log", 2, [Metric("acc/top1", 9.0, 1, 2), Metric("acc/top1", 0.0, 5, 2)], [], []),
]  # fmt: skip

TOGETHER: list[tuple[Any, ...]] = [
    ("log", 1, [Metric("loss", 1.0, 5, 2), Metric("loss", float("nan"), 5, 3)],
     [Param("lr", "0.1")], [RunTag("note", "a")]),
    ("log", 1, [Metric("loss", 1.0, 5, 2), Metric("loss", 0.0, 5, 3),
                Metric("acc/top1", 2.0, 1, 1)],
     [Param("lr", "0.1"), Param("opt", "adam")], [RunTag("note", "b")]),
    ("log", 1, [Metric("loss", float("inf"), 4, 3), Metric("acc/top1", 1.0, 1, 1)], [], []),
]  # fmt: skip
"""A run's calls that go at once: duplicates and the latest point across calls, a param set
again with its value, a tag replaced."""

POINTS: list[tuple[Any, ...]] = [
    ("log", 0, [Metric("loss", float("nan"), 1, 0), Metric("loss", 0.0, 1, 0),
                Metric("loss", float("-inf"), 2, 5), Metric("loss", 3.0, 9, 4)], [], []),
    ("log", 0, [Metric("loss", float("nan"), 1, 0), Metric("loss", -1.7976931348623157e308, 2, 5),
                Metric("acc/top1", -0.0, 0, 1), Metric("acc/top1", 0.0, 0, 1)], [], []),
    ("log", 0, [Metric("loss", 3.0, 9, 4), Metric("loss", 2.0, 9, 4)], [], []),
    ("delete", 1), ("log", 1, [Metric("loss", 1.0, 0, 0)], [], []),
    ("log", 1, [Metric("loss", 2.0, 0, 0)], [], []), ("restore", 1),
    ("log", 1, [Metric("loss", 1.0, 0, 0), Metric("x" * 251, 1.0, 0, 0)], [], []),
    ("end", 2), ("log", 2, [Metric("loss", 1.0, 0, 0)], [], []),
]  # fmt: skip
"""Calls of plain points alone, written as rows at once (``log_rows``): NaN and infinities,
duplicates and the latest point across calls, -0.0 beside 0.0, a deleted run's calls refused,
then one by one; a key MLflow refuses sends its calls the usual way."""


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)],  # a PostgreSQL cluster
)
def sides(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Side, Side]]:
    """MLflow's store and the bulk writer, each on a database of its own."""
    root = tmp_path_factory.mktemp(f"bulk-{request.param}")
    artifacts = (root / "artifacts").as_uri()
    if request.param == "sqlite":
        yield (
            mlflow_side(f"sqlite:///{root / 'mlflow.db'}", artifacts),
            bulk_side(f"sqlite:///{root / 'bulk.db'}", artifacts),
        )
        return
    pg = start_postgres()
    try:
        create_database(pg, "reference")
        create_database(pg, "bulk")
        reference = mlflow_side(pg.uri("reference"), artifacts)
        bulk = bulk_side(pg.uri("bulk"), artifacts)
        yield reference, bulk
        reference.store.engine.dispose()
        bulk.store.engine.dispose()
    finally:
        stop_postgres(pg)


def _same(sides: tuple[Side, Side], stream: list[tuple[Any, ...]]) -> None:
    reference, bulk = sides
    name = f"e-{uuid.uuid4().hex}"
    assert play(bulk, name, stream) == play(reference, name, stream)
    _equal(tables(bulk), tables(reference))
    _equal(reads(bulk), reads(reference))


def _equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equal dicts; otherwise fails with only the entries that differ."""
    differ = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
    assert not differ, {k: {"bulk": got.get(k), "mlflow": want.get(k)} for k in differ}


@pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@example(stream=ADVERSARIAL)
@example(stream=TOGETHER)
@example(stream=POINTS)
@given(stream=streams)
def test_same_rows_and_reads_as_mlflow(sides: tuple[Side, Side], stream: list[Any]) -> None:
    """Every stream leaves the same rows and the same answers in both databases."""
    _same(sides, stream)


def test_verified_schema_is_accepted_and_another_refused(tmp_path: Path) -> None:
    """MLflow's schema as this MLflow makes it is one the writer knows; a database at another
    revision, or without MLflow's tables, is left to MLflow's store."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    side = mlflow_side(uri, (tmp_path / "a").as_uri())
    engine = create_engine(uri)
    assert refusal(engine) == ""
    with side.store.engine.begin() as conn:
        revision = next(iter(VERIFIED_REVISIONS))
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    assert "f00dfeedbeef is not one it was verified against" in refusal(engine)
    with side.store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE alembic_version SET version_num = '{revision}'"))
        conn.execute(sa.text("DROP TABLE latest_metrics"))
    assert "latest_metrics is missing" in refusal(engine)
    engine.dispose()
    side.store.engine.dispose()
