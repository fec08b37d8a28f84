"""``metrics`` rows into SQLite as multi-row ``INSERT ... VALUES (...), (...) ON CONFLICT DO
NOTHING`` statements of up to 4096 rows, rather than ``executemany`` of one row a statement.

Python's ``sqlite3`` lets go of the GIL around each step of a statement and takes it back after:
``executemany`` does that once per row, and each time it may wait a switch interval (5 ms) for
a thread that holds the GIL (the receiver's ingest, the other flush writers). Measured on this
2-core box, beside one busy Python thread: 47,000 rows/s with ``executemany``, 109,000 with
statements of 4096 rows; alone, 230,000 and 300,000 (SQLite parses one statement, not 4096).

The values are bound as parameters, exactly as ``executemany`` binds them (the same doubles),
from the points' columns (server/flush/bulk/rows.py ``Columns``) laid into one flat list: the
run's id once per statement (``?1``), ``is_nan`` written as 0 when no point is NaN (the common
case), four parameters a row. A statement of ``n`` rows for each ``n`` of a few sizes (powers of
4), so that the driver's statement cache holds them all and a slice of any length is a handful
of statements. A row already in the table, or written earlier in the same statement, is skipped.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from server.flush.bulk.rows import ROW, Columns

_MOST_ROWS = 4096
"""Rows of the largest statement (20,481 parameters with ``is_nan``)."""
_NAMES = ", ".join(f'"{c}"' for c in ROW)
assert ROW[-2:] == ("is_nan", "run_uuid"), "the row's last two columns are written apart"


@functools.cache
def _statement(rows: int, width: int) -> str:
    """The statement of ``rows`` rows, ``width`` parameters each (4: ``is_nan`` 0; 5: bound)."""
    values = []
    for row in range(rows):
        first = 2 + row * width
        bound = [f"?{first + i}" for i in range(width)]
        is_nan = bound[4] if width == 5 else "0"
        values.append(f"({', '.join(bound[:4])}, {is_nan}, ?1)")
    return f"INSERT INTO metrics ({_NAMES}) VALUES {', '.join(values)} ON CONFLICT DO NOTHING"


def statement_sizes(variables: int, width: int = 5) -> tuple[int, ...]:
    """The statements' row counts, largest first (powers of 4, each within SQLite's limit of
    ``variables`` parameters a statement, ``width`` a row and the run's id)."""
    most = 1
    while most * 4 <= min(_MOST_ROWS, (variables - 1) // width):
        most *= 4
    sizes = [most]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 4)
    return tuple(sizes)


def insert_rows(cursor: Any, run_id: str, columns: Columns) -> None:
    """Inserts the points of ``run_id`` into ``metrics`` through a ``sqlite3`` cursor (in its
    connection's transaction), those there already skipped."""
    width = 5 if any(columns.nans) else 4
    flat: list[Any] = [None] * (len(columns) * width)
    flat[0::width] = columns.keys
    flat[1::width] = columns.values
    flat[2::width] = columns.timestamps
    flat[3::width] = columns.steps
    if width == 5:
        flat[4::width] = columns.nans
    start = 0
    for size in statement_sizes(_variables(cursor.connection), width):
        while len(columns) - start >= size:
            values = [run_id, *flat[start * width : (start + size) * width]]
            cursor.execute(_statement(size, width), values)
            start += size


def _variables(conn: sqlite3.Connection) -> int:
    """SQLite's limit on a statement's parameters (``getlimit``: Python 3.11 and later)."""
    getlimit = getattr(conn, "getlimit", None)
    if getlimit is not None:
        return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
