"""MLflow failing, told once and then at most once a minute.

While MLflow is down or refuses the receiver's credentials every attempt fails the same way;
a warning per attempt buries the log (hundreds of 450-character lines). The first failure
after MLflow worked (or at start) is one WARNING naming the cause, what happens to the data
and ``trackbridge doctor``; while it lasts, one line a minute at most says how long and how
many calls failed; when a call succeeds again, one INFO line. ``trackbridge status``
(server/flush/mlflow_state.py) and the health service (server/live/view.py) say it meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bridge.secret import redact_text
from server.flush.mlflow_state import diagnose

_logger = logging.getLogger(__name__)

REPEAT_EVERY_S = 60.0
"""While MLflow keeps failing, at most one log line this often."""
_ERROR_CHARS = 240


def short(error: str) -> str:
    """An MLflow error cut to what a log line needs (the cause is at its end: kept)."""
    if len(error) <= _ERROR_CHARS:
        return error
    half = _ERROR_CHARS // 2
    return f"{error[: half - 3]} ... {error[-half + 2 :]}"


class Outage:
    """Logs MLflow's failures as one outage at a time (thread-safe: pool threads report).

    Args:
        tracking_uri: The MLflow the receiver writes to (shown with any password redacted).
        clock: Monotonic seconds.
    """

    def __init__(self, tracking_uri: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._uri = redact_text(tracking_uri)
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None
        self._told = 0.0
        self._failures = 0
        self._untold = 0

    @property
    def ongoing(self) -> bool:
        """Whether MLflow is failing now (no call succeeded since the last failure)."""
        return self._since is not None

    def failed(self, error: str) -> None:
        """One MLflow call failed with ``error`` (it will be tried again)."""
        now = self._clock()
        with self._lock:
            self._failures += 1
            if self._since is None:
                self._since, self._told, self._untold = now, now, 0
                first = True
            elif now - self._told >= REPEAT_EVERY_S:
                self._told, first = now, False
            else:
                self._untold += 1
                return
            failures, untold, since = self._failures, self._untold, self._since
            self._untold = 0
        if first:
            _logger.warning(
                "MLflow at %s is failing: %s (%s). The receiver goes on accepting; events wait"
                " in its queue and are written once MLflow answers. Check with: trackbridge"
                " doctor --tracking-uri %s (at most one line a minute while this lasts)",
                self._uri, diagnose(error), short(error), self._uri,
            )  # fmt: skip
            return
        _logger.warning(
            "MLflow at %s still failing after %.0f s (%d failed calls, %d since the last line):"
            " %s; last error: %s",
            self._uri, now - since, failures, untold + 1, diagnose(error), short(error),
        )  # fmt: skip

    def succeeded(self) -> None:
        """A call went through: an outage in progress is over."""
        if self._since is None:
            return
        with self._lock:
            since, failures = self._since, self._failures
            if since is None:
                return
            self._since, self._failures = None, 0
        _logger.info(
            "MLflow at %s answers again after %.0f s (%d failed calls meanwhile)",
            self._uri, self._clock() - since, failures,
        )  # fmt: skip
