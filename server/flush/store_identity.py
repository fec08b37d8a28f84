"""Which MLflow store the receiver writes to, and noticing when it is another one.

The receiver's queue remembers the MLflow run of every client run by its id. Pointed at another
store (another ``--tracking-uri``, or the same one wiped and made anew) those ids mean nothing,
and every write would be refused. So the data directory keeps ``mlflow-store.json`` (0600): the
tracking URI (any password redacted) and the store's identity, the creation time of its Default
experiment (id 0), which MLflow makes when it makes the store. It is checked when the flusher
first reaches MLflow and whenever MLflow says a run the receiver knows does not exist.

When the identity differs, the receiver forgets the old store's run ids and creates in the new
store the runs it still has events for (from the run starts it kept), and says so once. Events
already written to the old store stay there: they are not copied.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.secret import redact_text
from server.data_dir import write_private

_logger = logging.getLogger(__name__)

IDENTITY_FILE = "mlflow-store.json"


@dataclass(frozen=True, slots=True)
class StoreChange:
    """The receiver now writes to another MLflow store than it did."""

    old_uri: str
    old_id: str
    new_uri: str
    new_id: str


class StoreIdentity:
    """The recorded identity of the MLflow store, compared with the store MLflow reports.

    Args:
        data_dir: Where ``mlflow-store.json`` lives.
        tracking_uri: The URI the receiver writes to now.
        read_id: Asks MLflow for the store's identity ("" when it cannot be told).
    """

    def __init__(self, data_dir: Path, tracking_uri: str, read_id: Callable[[], str]) -> None:
        self._path = data_dir / IDENTITY_FILE
        self._uri = redact_text(tracking_uri)
        self._read_id = read_id
        self.checked = False
        """Whether the store has been compared once since the receiver started."""

    def check(self) -> StoreChange | None:
        """Compares the store with the recorded one and records it; the change, if any.

        Raises:
            Exception: MLflow could not be asked (the caller retries later).
        """
        current = self._read_id()
        recorded = read_identity(self._path.parent)
        self.checked = True
        if recorded is None:
            self._write(current, None)
            return None
        old_id = str(recorded.get("store_id", ""))
        old_uri = str(recorded.get("tracking_uri", ""))
        # Without an identity on both sides, only the URI can tell (a wiped store then shows
        # as runs that no longer exist: see server/flush/refusals.py).
        changed = current != old_id if current and old_id else old_uri != self._uri
        if changed:
            previous = {"tracking_uri": old_uri, "store_id": old_id, "until_ms": _now_ms()}
            self._write(current, previous)
            return StoreChange(old_uri, old_id, self._uri, current)
        if current != old_id or old_uri != self._uri:
            self._write(current or old_id, recorded.get("previous"), recorded.get("since_ms"))
        return None

    def note_lost(self, events: int) -> None:
        """Records how many events the store that was replaced had been given."""
        recorded = read_identity(self._path.parent)
        if recorded and recorded.get("previous"):
            recorded["previous"]["events_written"] = events
            self._write(recorded["store_id"], recorded["previous"], recorded["since_ms"])

    def _write(self, store_id: str, previous: Any, since_ms: int | None = None) -> None:
        state = {
            "tracking_uri": self._uri,
            "store_id": store_id,
            "since_ms": _now_ms() if since_ms is None else since_ms,
            "previous": previous,
        }
        write_private(self._path, json.dumps(state))


def read_identity(data_dir: Path) -> dict[str, Any] | None:
    """The recorded store, or None when the receiver has recorded none."""
    try:
        state: dict[str, Any] = json.loads((data_dir / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def describe(change: StoreChange, runs_to_create: int) -> str:
    """The one line the receiver logs when the store changed."""
    return (
        f"MLflow is another store than before (was {change.old_uri}, {change.old_id or 'unknown'};"
        f" now {change.new_uri}, {change.new_id or 'unknown'}): the receiver forgets the old"
        f" store's run ids and creates again in this store the {runs_to_create} runs it still"
        " has events for; what it wrote to the old store stays there and is not copied"
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
