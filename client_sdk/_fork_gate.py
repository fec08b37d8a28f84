"""Forks wait for this process's short gRPC calls; a child forked mid-call keeps off gRPC.

gRPC readies itself for a fork only when no thread is inside one of its calls. Otherwise it
skips its fork handlers, and a child that then opens a channel can abort inside gRPC (seen
here: a DataLoader-style worker logging while its parent's sender was mid-Publish died with
SIGABRT in ev_epoll1_linux.cc, about one fork in eighty). So every call of this package passes
through the gate. A fork (``os.fork``, multiprocessing's fork start method) waits for the short
calls in flight (Publish, GetRun), up to ``FORK_WAIT_S``, and holds new calls back until it is
done. Long calls (artifact uploads) are not waited for.

A child forked while a call was still in flight is told so by ``clean_fork()``: its transports
then open no channel and report the receiver unreachable, so what it logs stays in its spool
for ``trackbridge sync``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

FORK_WAIT_S = 1.0
"""Longest a fork waits for short calls in flight. A Publish takes milliseconds; one still in
flight after a second is waiting on a dead network (up to its 10 s deadline), and the fork goes
ahead rather than hold up the training loop: that child then keeps off gRPC."""


class _Gate:
    def __init__(self) -> None:
        self._reset(clean=True)

    def _reset(self, *, clean: bool) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._short = 0
        self._long = 0
        self._forks = 0
        self._in_flight_at_fork = 0
        self.clean = clean

    @contextlib.contextmanager
    def call(self, *, long: bool) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._forks == 0)
            if long:
                self._long += 1
            else:
                self._short += 1
        try:
            yield
        finally:
            with self._cond:
                if long:
                    self._long -= 1
                else:
                    self._short -= 1
                self._cond.notify_all()

    def before_fork(self) -> None:
        with self._cond:
            self._forks += 1
            self._cond.wait_for(lambda: self._short == 0, timeout=FORK_WAIT_S)
            self._in_flight_at_fork = self._short + self._long

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forks -= 1
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        # The parent's other threads do not exist here, and one may have held the lock at the
        # fork: start over with a new one, keeping the verdict.
        self._reset(clean=self.clean and self._in_flight_at_fork == 0)


_GATE = _Gate()
os.register_at_fork(
    before=_GATE.before_fork,
    after_in_parent=_GATE.after_fork_in_parent,
    after_in_child=_GATE.after_fork_in_child,
)


def grpc_call(*, long: bool = False) -> contextlib.AbstractContextManager[None]:
    """Wraps a call into gRPC: forks wait for a short one to end, and a child forked during
    any (``long`` or not) keeps off gRPC."""
    return _GATE.call(long=long)


def clean_fork() -> bool:
    """False in a process forked while one of its parent's gRPC calls was in flight."""
    return _GATE.clean
