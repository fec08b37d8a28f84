"""A full disk never stops the receiver for good: on a small data directory (a tmpfs of its
own) whose sink cannot write, the queue grows to the free-space reserve, where new batches are
refused (RESOURCE_EXHAUSTED with the reason; health and ``status`` say why) while the disk
still has room for the flusher; once the sink writes again, flushing frees space in the queue
and the receiver takes batches again, without a restart."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, RunStart, Tag
from client_sdk._transport import Transport, TransportError
from tests.support.procs import TRACKBRIDGE_EXE, launch_receiver, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TS = 1_700_000_000_000
TAGS_PER_BATCH = 100
TAG_BYTES = 7000  # ~0.7 MB a batch


@pytest.fixture
def mount_tmpfs() -> Iterator[Callable[[Path, int], Path]]:
    """Mounts small tmpfs file systems (root only); each is unmounted at teardown."""
    mounted: list[Path] = []

    def mount(path: Path, size_mib: int) -> Path:
        path.mkdir(parents=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        if done.returncode != 0:
            why = f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
            if os.environ.get("CI"):  # CI runs as root: a mount that fails there is a failure
                pytest.fail(why)
            pytest.skip(why)  # a developer's machine without root
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def _batch(first_seq: int) -> bytes:
    events: list[object] = [] if first_seq > 1 else [RunStart(run_name="big", start_time_ms=TS)]
    events += [
        Tag(f"t{first_seq + i}", "v" * TAG_BYTES) for i in range(TAGS_PER_BATCH - len(events))
    ]
    batch = EventBatch("site-a", "disk-job", "run-1", first_seq, tuple(events))  # type: ignore[arg-type]
    return batch_to_proto(batch).SerializeToString()


def _fill(path: Path) -> None:
    """Writes ``path`` until its file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)


def _status(data_dir: Path) -> str:
    return subprocess.run(
        [str(TRACKBRIDGE_EXE), "status", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip


def _health(address: str) -> str:
    return subprocess.run(
        [str(TRACKBRIDGE_EXE), "health", "--receiver", address],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip


def test_a_full_data_directory_refuses_then_recovers_without_a_restart(
    tmp_path: Path, mount_tmpfs: Callable[[Path, int], Path]
) -> None:
    disk = mount_tmpfs(tmp_path / "disk", 40)
    files = mount_tmpfs(tmp_path / "files", 64)
    (files / "out").mkdir()
    ballast = files / "ballast"
    _fill(ballast)  # the sink's disk is full
    data_dir = disk / "data"
    receiver = launch_receiver(
        tmp_path, "", data_dir=data_dir, flush_interval_s=0.2,
        extra_args=("--sink", f"jsonl:{files / 'out'}", "--disk-reserve", "16"),
    )  # fmt: skip
    transport = Transport(receiver.address, timeout_s=20.0)
    try:
        seq, refused = 1, None
        while refused is None:  # the queue grows until the reserve is reached
            try:
                transport.publish(_batch(seq))
            except TransportError as exc:
                refused = exc
            else:
                seq += TAGS_PER_BATCH
            assert seq < 60 * TAGS_PER_BATCH, "never refused"
        assert refused.code == "RESOURCE_EXHAUSTED"
        assert refused.retryable
        assert "under its reserve of 16 MiB (--disk-reserve)" in str(refused)
        free = os.statvfs(disk)
        assert free.f_bavail * free.f_frsize > 8 * 1024 * 1024  # refused before it was full
        wait_until(lambda: "disk: LOW:" in _status(data_dir), 30, what="status to say why")
        wait_until(lambda: "NOT_SERVING" in _health(receiver.address), 30, what="NOT_SERVING")

        ballast.unlink()  # the sink writes again: flushing frees space in the queue

        def taken() -> bool:
            try:
                transport.publish(_batch(seq))
            except TransportError as exc:
                assert exc.code == "RESOURCE_EXHAUSTED", exc
                return False
            return True

        wait_until(taken, 120, interval_s=0.5, what="the receiver to take batches again")
        seq += TAGS_PER_BATCH
        wait_until(lambda: "disk: LOW" not in _status(data_dir), 30, what="status to clear")
        wait_until(lambda: ": SERVING" in _health(receiver.address), 30, what="SERVING again")
    finally:
        transport.close()
        assert receiver.stop() == 0, receiver.log_tail()
    lines = [
        json.loads(line)
        for path in (files / "out").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert [line["seq"] for line in lines if line["seq"]] == list(range(1, seq))
