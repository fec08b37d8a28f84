"""The data directory's free-space reserve (server/ingest/disk.py), in process: it refuses
below the reserve with the reason, counts the queue's reusable pages as free, and takes
batches again once there is room."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.ingest.disk import MIB, DiskReserve

pytestmark = pytest.mark.timeout(30)


def test_below_the_reserve_batches_are_refused_until_the_queue_frees_space(
    tmp_path: Path,
) -> None:
    stat = os.statvfs(tmp_path)
    free = stat.f_bavail * stat.f_frsize
    reusable = 0
    limit = free + 64 * MIB
    reserve = DiskReserve(tmp_path, limit, lambda: reusable)
    reason = reserve.shortfall()
    assert "MiB free, under its reserve of" in reason
    assert "--disk-reserve" in reason
    # A batch as big as the reserve: checked again, still refused. (The free space is read
    # anew: anything else writing to this filesystem changes the figure in the reason.)
    assert "MiB free, under its reserve of" in reserve.shortfall(limit)
    reusable = 128 * MIB  # flushing left pages the queue reuses
    assert reserve.shortfall(limit) == ""
    assert reserve.free_bytes >= free


def test_no_reserve_never_refuses(tmp_path: Path) -> None:
    assert DiskReserve(tmp_path, 0, lambda: 0).shortfall(1 << 40) == ""
