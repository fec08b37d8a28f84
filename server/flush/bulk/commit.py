"""Group commit: the flush writers' transactions into MLflow's database, several in one.

A commit is what costs on MLflow's SQLite file (about 10 ms: its rollback journal is synced),
and SQLite takes one writer at a time anyway: writers waiting for its lock sleep in its busy
handler (1 ms, 2 ms, 5 ms... up to 100 ms a try) instead of writing. So a writer that finds
another one committing hands its work over and waits; the one that commits next does every
piece handed over in one transaction, each inside a savepoint of its own:

- one piece's failure (a run refused, a param conflict) rolls back its savepoint alone and is
  raised to its own writer; the other pieces commit;
- a piece is committed whole with its ``trackbridge.flushed`` tag, or not at all, and its
  writer learns which before it records progress (server/flush/progress.py): exactly-once
  holds as with one transaction per piece;
- a failed commit fails every piece of it (their writers try again, as with any database
  error).

PostgreSQL takes several writers at once, each on a connection of its own, and works on their
statements in parallel: there each writer commits its own transaction (``together=False``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

import sqlalchemy as sa

T = TypeVar("T")


class _Piece(Generic[T]):
    """One writer's work and how it went."""

    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[sa.Connection], T]) -> None:
        self.work = work
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]  # set when error is None


class GroupCommit:
    """Runs writers' pieces of work in shared transactions (``begin`` opens one)."""

    def __init__(
        self, begin: Callable[[], AbstractContextManager[sa.Connection]], *, together: bool = True
    ) -> None:
        self._begin = begin
        self._together = together
        self._changed = threading.Condition()
        self._waiting: list[_Piece[object]] = []
        self._committing = False
        self.commits = 0
        """Transactions committed (or tried): fewer than ``pieces`` when writers met."""
        self.pieces = 0
        """Pieces of work run."""

    @property
    def waiting(self) -> int:
        """Pieces handed over and not yet taken into a transaction."""
        with self._changed:
            return len(self._waiting)

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        """Runs ``work`` in a transaction (perhaps with others' work) and returns its result
        once that transaction has committed; raises what ``work`` or the commit raised."""
        if not self._together:
            with self._begin() as conn:
                return work(conn)
        piece: _Piece[T] = _Piece(work)
        with self._changed:
            self._waiting.append(piece)  # type: ignore[arg-type]  # results stay with pieces
            while self._committing and not piece.done:
                self._changed.wait(1.0)  # woken when the commit ends; bounded all the same
            if piece.done:  # another writer's transaction took it
                return piece.outcome()
            self._committing = True
            pieces, self._waiting = self._waiting, []
        try:
            self._commit(pieces)
        finally:
            with self._changed:
                for p in pieces:
                    p.done = True
                self._committing = False
                self._changed.notify_all()
        return piece.outcome()

    def _commit(self, pieces: list[_Piece[object]]) -> None:
        self.commits += 1
        self.pieces += len(pieces)
        try:
            with self._begin() as conn:
                if len(pieces) == 1:  # no savepoint needed: its failure is the transaction's
                    pieces[0].result = pieces[0].work(conn)
                    return
                for piece in pieces:
                    savepoint = conn.begin_nested()
                    try:
                        piece.result = piece.work(conn)
                    except Exception as exc:
                        savepoint.rollback()
                        piece.error = exc
                    else:
                        savepoint.commit()
        except BaseException as exc:
            for piece in pieces:
                if piece.error is None:
                    piece.error = exc
                    piece.result = None
