"""The data directory: private (0700, files 0600), and a damaged ``queue.db`` gets one clear line
naming the file and the way out, from ``serve`` and ``status``, while ``doctor`` explains the
recovery; nothing of the damaged file is deleted or changed."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.bystander import start_bystander
from tests.support.isolation import log_points, writer_for
from tests.support.procs import TRACKBRIDGE_EXE, ReceiverProcess, child_env, free_port


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TRACKBRIDGE_EXE), *args], capture_output=True, text=True, timeout=90,
        check=False, env=child_env(),
    )  # fmt: skip


def _modes(root: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


@pytest.mark.timeout(180)
def test_the_data_directory_is_private_even_when_it_was_not(
    start_receiver: Callable[..., ReceiverProcess], job: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "loose-data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "queue.db").write_bytes(b"")  # an empty database, left readable to all
    (data_dir / "queue.db").chmod(0o644)
    receiver = start_receiver(data_dir=data_dir)
    writer = writer_for(receiver, "site-1", job, tmp_path)
    writer.start_run("site-1")
    log_points(writer, 0, 50)
    writer.end_run("FINISHED")
    assert writer.close(timeout_s=30) == 0
    assert receiver.stop() == 0, receiver.log_tail()
    modes = _modes(data_dir)
    assert modes["."] == 0o700
    loose = {name: oct(mode) for name, mode in modes.items()
             if name != "." and mode & 0o077}  # fmt: skip
    assert loose == {}, loose
    assert "queue.db" in modes and "receiver-id" in modes and "mlflow-state.json" in modes


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_damaged_queue_gets_one_line_and_nothing_of_it_is_lost(
    start_receiver: Callable[..., ReceiverProcess],
    receiver: ReceiverProcess,
    mlflow_client: Any,
    job: str,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "damaged-data"
    first = start_receiver(
        tracking_uri=f"http://127.0.0.1:{free_port()}", data_dir=data_dir, shutdown_timeout_s=2
    )
    writer = writer_for(first, "site-1", job, tmp_path)
    writer.start_run("site-1")
    log_points(writer, 0, 50)
    assert writer.flush(timeout_s=60)
    assert writer.close(timeout_s=10) == 0
    assert first.stop() == 1  # MLflow unreachable: the events wait in the queue
    queue = data_dir / "queue.db"
    with queue.open("r+b") as damaged:
        damaged.write(b"this is no longer an SQLite header!")
    files = sorted(p.name for p in data_dir.iterdir())
    digest = hashlib.sha256(queue.read_bytes()).hexdigest()
    bystander = start_bystander(receiver.address, tmp_path)  # another receiver: unaffected
    try:
        where = ("--data-dir", str(data_dir), "--tracking-uri", receiver.tracking_uri)
        served = _cli("serve", "--listen", "127.0.0.1:0", "--http-listen", "off", *where)
        shown = _cli("status", "--data-dir", str(data_dir))
        for result in (served, shown):
            assert result.returncode == 2, (result.stdout, result.stderr)
            (line,) = result.stderr.strip().splitlines()
            assert f"queue database {queue} is damaged" in line, line
            assert f"trackbridge doctor --data-dir {data_dir}" in line, line
        explained = _cli("doctor", *where)
        assert explained.returncode == 1, explained.stdout + explained.stderr
        assert f"FAIL  queue: {queue} is damaged" in explained.stdout, explained.stdout
        assert f"mv {queue} {queue}.damaged" in explained.stdout
        assert ".recover" in explained.stdout
        assert "Traceback" not in explained.stdout + explained.stderr
        bystander.assert_delivered(mlflow_client)
    finally:
        bystander.stop()
    assert sorted(p.name for p in data_dir.iterdir()) == files
    assert hashlib.sha256(queue.read_bytes()).hexdigest() == digest
