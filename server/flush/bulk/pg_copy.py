"""``metrics`` rows into PostgreSQL with ``COPY``: on this box about 1.5-2.5x the rows/s of
multi-row ``INSERT`` statements (the server parses one stream instead of SQL, and psycopg2 quotes
no parameter).

``COPY`` knows no ``ON CONFLICT``, and a row already there (a point logged twice, a call written
again after a crash, the same point twice in one slice) must be skipped as MLflow's store skips
it. So the rows are copied straight into ``metrics`` inside a savepoint; when one is there
already (a unique violation) the savepoint is rolled back and the rows are copied into a
temporary table of ``metrics``' shape instead, then inserted from there with ``ON CONFLICT DO
NOTHING``. Either way in the caller's transaction.

Floats travel as ``repr`` (the shortest text that reads back to the same double; PostgreSQL reads
it correctly rounded), so the stored values are the ones ``INSERT`` would store; but -0.0, which
psycopg2 writes `` -0.0`` in SQL (numeric zero negated: 0.0), is sent as 0.0 to store MLflow's
0.0 (the differential test caught it). Binary ``COPY`` was tried: PostgreSQL spent the same
6-7 µs of its CPU on each row (the heap, the table's three indexes, the foreign key to ``runs``
checked per row), text or binary.
"""

from __future__ import annotations

import io
from typing import Any

from server.flush.bulk.rows import ROW, Columns

_COLUMNS = ", ".join(f'"{c}"' for c in ROW)
_STAGE = "trackbridge_metrics_in"
"""The temporary table rows go through when some are there already (one a session)."""
_SPECIAL = frozenset("\t\n\r\\")
"""Characters that ``COPY``'s text format would need escaped (no metric key MLflow takes has
one; a key with one goes through ``INSERT``)."""


def copyable(columns: Columns) -> bool:
    """Whether the points' keys can go as ``COPY`` text as they are."""
    return not any(_SPECIAL.intersection(key) for key in set(columns.keys))


def copy_metrics(cursor: Any, run_id: str, columns: Columns) -> None:
    """Copies the points of ``run_id`` into ``metrics``, those there already skipped (in the
    cursor's transaction). Raises what psycopg2 raises but a unique violation."""
    from psycopg2 import errors  # PostgreSQL's driver, imported for it only

    points = zip(
        columns.keys, columns.values, columns.timestamps, columns.steps, columns.nans, strict=True
    )
    text = "".join([
        f"{k}\t{(v or 0.0)!r}\t{t}\t{s}\t{'t' if nan else 'f'}\t{run_id}\n"
        for k, v, t, s, nan in points
    ])  # fmt: skip
    cursor.execute("SAVEPOINT trackbridge_copy")
    try:
        cursor.copy_expert(f"COPY metrics ({_COLUMNS}) FROM STDIN", io.StringIO(text))
    except errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT trackbridge_copy")
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGE} (LIKE metrics) ON COMMIT DELETE ROWS"
        )
        cursor.execute(f"TRUNCATE {_STAGE}")  # an earlier stage in this transaction
        cursor.copy_expert(f"COPY {_STAGE} ({_COLUMNS}) FROM STDIN", io.StringIO(text))
        cursor.execute(
            f"INSERT INTO metrics ({_COLUMNS}) SELECT {_COLUMNS} FROM {_STAGE}"
            " ON CONFLICT DO NOTHING"
        )
    cursor.execute("RELEASE SAVEPOINT trackbridge_copy")
