"""Receiver configuration: command-line flag > environment > default."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bridge import envvars

DEFAULT_LISTEN = "127.0.0.1:50551"
DEFAULT_DATA_DIR = Path("trackbridge-data")


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """Everything the receiver needs to run."""

    listen: str = DEFAULT_LISTEN
    """gRPC listen address ``host:port``; port 0 picks a free port."""
    data_dir: Path = DEFAULT_DATA_DIR
    """Holds the durable queue (``queue.db``) and the embedded MLflow store."""
    tracking_uri: str = ""
    """MLflow tracking URI; empty means the embedded SQLite store in ``data_dir``."""
    flush_interval_s: float = 1.0
    """Seconds between timed flushes to MLflow (a run with a full batch flushes at once)."""
    sqlite_synchronous: str = "NORMAL"
    """Queue fsync policy: NORMAL survives process kill, FULL also survives power loss."""
    shutdown_timeout_s: float = 30.0
    """Budget for flushing the queue to MLflow on SIGTERM/SIGINT."""
    run_lease_s: float = 600.0
    """A run not ended whose client is silent this long (no batch, no heartbeat) is KILLED."""
    max_backlog_events: int = 2_000_000
    """Events stored but not yet in MLflow past which clients get RESOURCE_EXHAUSTED."""

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listen must be host:port, got {self.listen!r}")
        if not self.flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be positive, got {self.flush_interval_s!r}")
        if not self.shutdown_timeout_s > 0:
            raise ValueError(
                f"shutdown_timeout_s must be positive, got {self.shutdown_timeout_s!r}"
            )
        if not self.run_lease_s > 0:
            raise ValueError(f"run_lease_s must be positive, got {self.run_lease_s!r}")
        if self.max_backlog_events < 1:
            raise ValueError(
                f"max_backlog_events must be at least 1, got {self.max_backlog_events!r}"
            )
        if self.sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ValueError(
                f"sqlite_synchronous must be NORMAL or FULL, got {self.sqlite_synchronous!r}"
            )

    @property
    def embedded(self) -> bool:
        """True when MLflow is the local SQLite store in the data directory."""
        return not self.tracking_uri

    @property
    def effective_tracking_uri(self) -> str:
        """The tracking URI MLflow is reached at."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @classmethod
    def resolve(
        cls,
        *,
        listen: str | None = None,
        data_dir: str | Path | None = None,
        tracking_uri: str | None = None,
        flush_interval_s: float | None = None,
        sqlite_synchronous: str | None = None,
        shutdown_timeout_s: float | None = None,
        max_backlog_events: int | None = None,
        run_lease_s: float | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> ReceiverConfig:
        """Builds a config from explicit values, then the environment, then defaults."""
        if listen is None:
            listen = env.get(envvars.TRACKBRIDGE_LISTEN, DEFAULT_LISTEN)
        if data_dir is None:
            data_dir = env.get(envvars.TRACKBRIDGE_DATA_DIR, str(DEFAULT_DATA_DIR))
        if tracking_uri is None:
            tracking_uri = env.get(envvars.MLFLOW_TRACKING_URI, "")
        if flush_interval_s is None:
            raw = env.get(envvars.TRACKBRIDGE_FLUSH_INTERVAL_S)
            flush_interval_s = float(raw) if raw is not None else 1.0
        return cls(
            listen=listen,
            data_dir=Path(data_dir),
            tracking_uri=tracking_uri,
            flush_interval_s=flush_interval_s,
            sqlite_synchronous="NORMAL" if sqlite_synchronous is None else sqlite_synchronous,
            shutdown_timeout_s=30.0 if shutdown_timeout_s is None else shutdown_timeout_s,
            max_backlog_events=2_000_000 if max_backlog_events is None else max_backlog_events,
            run_lease_s=600.0 if run_lease_s is None else run_lease_s,
        )


def redact_uri(uri: str) -> str:
    """The URI with any password in it replaced, for logs and messages."""
    scheme, sep, rest = uri.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return uri
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
