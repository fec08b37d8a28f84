"""``metrics`` rows into SQLite as multi-row ``INSERT ... VALUES (...), (...) ON CONFLICT DO
NOTHING`` statements of up to 4096 rows, rather than ``executemany`` of one row a statement.

Python's ``sqlite3`` lets go of the GIL around each step of a statement and takes it back after:
``executemany`` does that once per row, and each time it may wait a switch interval (5 ms) for
a thread that holds the GIL (the receiver's ingest, the other flush writers). Measured on this
2-core box, beside one busy Python thread: 47,000 rows/s with ``executemany``, 109,000 with
statements of 4096 rows; alone, 230,000 and 300,000 (SQLite parses one statement, not 4096).

The values are bound as parameters, exactly as ``executemany`` binds them (the same doubles);
a statement of ``n`` rows for each ``n`` of a few sizes (powers of 4), so that the driver's
statement cache holds them all and a slice of any length is a handful of statements. The rows
are distinct (server/flush/bulk/writer.py); one already in the table is skipped.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
from typing import Any

from server.flush.bulk.rows import ROW, Row

_MOST_ROWS = 4096
"""Rows of the largest statement (24,576 parameters)."""
_NAMES = ", ".join(f'"{c}"' for c in ROW)
_ROW = "(" + ", ".join("?" * len(ROW)) + ")"


@functools.cache
def _statement(rows: int) -> str:
    values = ", ".join([_ROW] * rows)
    return f"INSERT INTO metrics ({_NAMES}) VALUES {values} ON CONFLICT DO NOTHING"


def statement_sizes(variables: int) -> tuple[int, ...]:
    """The statements' row counts, largest first (powers of 4, each within SQLite's limit of
    ``variables`` parameters a statement)."""
    most = 1
    while most * 4 <= min(_MOST_ROWS, variables // len(ROW)):
        most *= 4
    sizes = [most]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 4)
    return tuple(sizes)


def insert_rows(cursor: Any, rows: list[Row]) -> None:
    """Inserts the distinct ``rows`` into ``metrics`` through a ``sqlite3`` cursor (in its
    connection's transaction), those there already skipped."""
    sizes = statement_sizes(_variables(cursor.connection))
    start = 0
    for size in sizes:
        while len(rows) - start >= size:
            values = list(itertools.chain.from_iterable(rows[start : start + size]))
            cursor.execute(_statement(size), values)
            start += size


def _variables(conn: sqlite3.Connection) -> int:
    """SQLite's limit on a statement's parameters (``getlimit``: Python 3.11 and later)."""
    getlimit = getattr(conn, "getlimit", None)
    if getlimit is not None:
        return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    return 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
