"""Failed and restarted background workers, kept in the data directory (``workers.json``) so
that ``trackbridge status`` names them: the receiver rewrites it when a worker fails or
restarts, and empties it when it starts."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.worker import Workers
from server.data_dir import write_private

_logger = logging.getLogger(__name__)

WORKERS_FILE = "workers.json"


def write_failed(
    data_dir: Path,
    failed: dict[str, str],
    disk_low: str = "",
    restarted: dict[str, tuple[int, str]] | None = None,
) -> None:
    """Records the failed workers by name, with their errors ({} when none has failed), why
    new batches are refused for disk space ("" while there is room), and the workers that
    restarted after a failure (restarts, last error)."""
    state = {
        "failed": failed,
        "disk_low": disk_low,
        "restarted": {name: list(r) for name, r in (restarted or {}).items()},
        "updated_ms": time.time_ns() // 1_000_000,
    }
    write_private(data_dir / WORKERS_FILE, json.dumps(state))


def read_failed(data_dir: Path) -> dict[str, Any]:
    """The failed workers the receiver recorded last ({} when none, or no record)."""
    failed = _read(data_dir).get("failed", {})
    return failed if isinstance(failed, dict) else {}


def read_restarted(data_dir: Path) -> dict[str, Any]:
    """Workers that restarted after a failure, as the receiver recorded last: name ->
    [restarts, last error] ({} when none)."""
    restarted = _read(data_dir).get("restarted", {})
    return restarted if isinstance(restarted, dict) else {}


def read_disk_low(data_dir: Path) -> str:
    """Why the receiver refuses new batches for disk space, as it recorded last ("": it
    does not)."""
    return str(_read(data_dir).get("disk_low", ""))


def _read(data_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((data_dir / WORKERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def failed_line(failed: dict[str, Any]) -> str:
    """What ``status`` says of failed workers ("" when none)."""
    if not failed:
        return ""
    named = "; ".join(f"{name}: {error}" for name, error in sorted(failed.items()))
    return (
        f"workers: FAILED ({named}); health is NOT_SERVING until the receiver is restarted"
        " (its log has the traceback)"
    )


def restarted_line(restarted: dict[str, Any]) -> str:
    """What ``status`` says of workers that restarted after a failure ("" when none)."""
    if not restarted:
        return ""
    named = "; ".join(
        f"{name} {count}x, last: {error}" for name, (count, error) in sorted(restarted.items())
    )
    return f"workers: restarted after a failure ({named}); its log has the traceback"


async def record_failed(
    workers: Workers, data_dir: Path, disk_low: Callable[[], str], interval_s: float = 0.5
) -> None:
    """Keeps the file in step with ``workers.failed()``, ``disk_low()`` and the workers'
    restarts until cancelled."""
    recorded: tuple[dict[str, str], str, dict[str, tuple[int, str]]] | None = None
    while True:
        restarted = {w.name: (w.restarts, w.last_error) for w in workers if w.restarts}
        state = (workers.failed(), disk_low(), restarted)
        if state != recorded:
            try:
                write_failed(data_dir, *state)
            except OSError as exc:
                _logger.warning("cannot record failed workers in %s: %s", data_dir, exc)
            else:
                recorded = state
        await asyncio.sleep(interval_s)
