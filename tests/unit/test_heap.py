"""server/heap.py: the start-up heap frozen, the garbage collected first and after.

The freeze is process-wide: the test unfreezes when it ends (``gc.unfreeze`` gives the objects
back to the collector), so the rest of the session runs as before."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from server.heap import freeze_startup_heap


class _Node:
    other: _Node


def _cycle() -> weakref.ref[_Node]:
    """Two objects that only the collector can free; a weak reference to one."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    assert gc.get_freeze_count() == 0
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("unfrozen_after")
def test_the_start_up_heap_is_frozen_and_garbage_is_still_collected() -> None:
    before = _cycle()
    kept = [_Node() for _ in range(1000)]

    frozen = freeze_startup_heap()

    assert frozen == gc.get_freeze_count() > len(kept)  # every live object, ``kept`` among them
    assert gc.isenabled()
    assert before() is None  # collected before the freeze, not kept for good
    after = _cycle()
    gc.collect()
    assert after() is None  # the collector still frees what comes later
    assert len(kept) == 1000
