"""A small filesystem that really fills up: a tmpfs the test mounts (the tests run as root) and
unmounts, whatever happens."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """Mounts a tmpfs of ``size`` (``4m``) on ``directory`` for the block; yields it."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert mounted.returncode == 0, (
        f"cannot mount a tmpfs on {directory} (these tests need root): {mounted.stderr}"
    )
    try:
        yield directory
    finally:
        # Lazy: a process the test killed may still be closing files there.
        subprocess.run(
            ["umount", "-l", str(directory)], capture_output=True, timeout=30, check=False
        )
