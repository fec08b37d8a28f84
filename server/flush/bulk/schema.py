"""Whether the bulk writer may write a tracking URI's database: its dialect and its schema.

The writer produces the rows of MLflow's own ``SqlAlchemyStore`` for the schema revisions it
was verified against (MLflow's ``alembic_version``; the differential test
tests/server/test_bulk_differential.py checks each). Any other revision, dialect or doubt
leaves every write to MLflow's store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa

VERIFIED_REVISIONS = frozenset({"dc11669786a5"})
"""MLflow schema revisions (``alembic_version.version_num``) whose tables the bulk writer
was verified against: the head of MLflow 3.17.2."""

DIALECTS = frozenset({"sqlite", "postgresql"})
"""Databases the bulk writer knows how to write (MySQL and MSSQL go through MLflow's store)."""

_COLUMNS = {
    "runs": {"run_uuid", "lifecycle_stage", "name"},
    "metrics": {"key", "value", "timestamp", "run_uuid", "step", "is_nan"},
    "latest_metrics": {"key", "value", "timestamp", "run_uuid", "step", "is_nan"},
    "params": {"key", "value", "run_uuid"},
    "tags": {"key", "value", "run_uuid"},
}


def dialect_of(tracking_uri: str) -> str:
    """The SQLAlchemy dialect a tracking URI names (``sqlite``, ``postgresql``...), "" when
    it names no database (a server, a directory, Databricks)."""
    scheme = tracking_uri.partition("://")[0]
    if not scheme or "://" not in tracking_uri:
        return ""
    return scheme.partition("+")[0]


def refusal(engine: sa.Engine) -> str:
    """Why the bulk writer must not write this database ("" when it may).

    Raises:
        sqlalchemy.exc.OperationalError: The database cannot be reached (ask again later).
    """
    import sqlalchemy as sa  # here: a receiver whose MLflow is a server never loads it

    if engine.dialect.name not in DIALECTS:
        return f"{engine.dialect.name} is not a database it writes"
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in ("alembic_version", *_COLUMNS):
            if not inspector.has_table(table):
                return f"MLflow's table {table} is missing"
        for table, columns in _COLUMNS.items():
            have = {c["name"] for c in inspector.get_columns(table)}
            if not columns <= have:
                return f"MLflow's table {table} lacks {sorted(columns - have)}"
        query = sa.text("SELECT version_num FROM alembic_version")
        revisions = {str(r[0]) for r in conn.execute(query)}
    if len(revisions) != 1 or not revisions <= VERIFIED_REVISIONS:
        return (
            f"schema revision {', '.join(sorted(revisions)) or 'none'} is not one it was verified"
            f" against ({', '.join(sorted(VERIFIED_REVISIONS))})"
        )
    return ""
