"""Receiver configuration: command-line flag > environment > default."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import envvars
from bridge.secret import redacted_repr
from server.aggregate.config import AggregateConfig
from server.fleet.config import FleetConfig, parse_queue_url
from server.ingest.pacing import DEFAULT_BUDGET_PER_S
from server.security.config import SecurityConfig

DEFAULT_LISTEN = "127.0.0.1:50551"
DEFAULT_DATA_DIR = Path("trackbridge-data")
READ_SCOPES = ("own", "job", "all")
DEFAULT_BULK_WRITE = True
_OFF = ("0", "false", "off", "no")
_ON = ("1", "true", "on", "yes")


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
    flush_workers: int = 4
    """Runs written to MLflow at once, each on a thread of its own (each run's events stay
    in order); 1 writes one run after another."""
    sqlite_synchronous: str = "NORMAL"
    """Queue fsync policy: NORMAL survives process kill, FULL also survives power loss."""
    shutdown_timeout_s: float = 30.0
    """Budget for flushing the queue to MLflow on SIGTERM/SIGINT."""
    run_lease_s: float = 600.0
    """A run not ended whose client is silent this long (no batch, no heartbeat) is KILLED."""
    max_backlog_events: int = 2_000_000
    """Events stored but not yet in MLflow past which clients get RESOURCE_EXHAUSTED."""
    disk_reserve_mib: int = 64
    """Free space (MiB) kept on the data directory: below it new batches are refused
    (RESOURCE_EXHAUSTED; clients keep them) while flushing frees space; 0 keeps none."""
    publish_budget_per_s: float = DEFAULT_BUDGET_PER_S
    """Publish calls per second this receiver asks its clients to stay within, together: each
    publish ack advises a linger of (runs publishing recently) / this (server/ingest/pacing.py;
    1000 runs at the default make the writer's 0.2 s, 100 make 20 ms)."""
    http_listen: str = ""
    """Live view and /metrics address ``host:port``; "" means loopback on the gRPC port + 1
    (port 0 when the gRPC port is 0); ``off`` serves no HTTP."""
    viewer_token: str = field(default="", repr=False)
    """Token the live page, /metrics and Watch require; "" requires none (loopback only)."""
    client_timeout_s: float = 150.0
    """A client not heard from this long is shown disconnected (clients heartbeat every 60 s)."""
    live_points: int = 1000
    """Buckets kept per client and metric for the live charts: the whole run, each bucket a
    point with the min/max of the points it stands for (long runs merge buckets pairwise)."""
    security: SecurityConfig = field(default_factory=SecurityConfig)
    """TLS, client identity and per-client limits of the gRPC port."""
    read_scope: str = "job"
    """What clients may read back through the receiver: ``own`` (runs of their client id),
    ``job`` (runs of their job) or ``all``; the viewer token reads all."""
    mlflow_sink: bool = True
    """Whether events go to MLflow (``--sink mlflow``); False runs the receiver without MLflow."""
    jsonl_dir: Path | None = None
    """Where JSON-lines files of every event go (``--sink jsonl:DIR``); None writes none."""
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)
    """Which metrics are aggregated across a job's clients, and how long a round waits."""
    alone: bool = False
    """This is the only receiver writing to this MLflow (``--alone``; always so for the
    embedded store): a job's new runs are created in one call each, without the check that
    another receiver is not creating the same run."""
    round_as_step: bool = False
    """Write a point's federated round as MLflow's step (else as the ``trackbridge.round``
    metric beside the point, at its own step)."""
    bulk_write: bool = DEFAULT_BULK_WRITE
    """Write metrics, params and tags straight into a database-backed MLflow (``sqlite:///``,
    ``postgresql://``; the embedded store included) in set-based transactions, when its schema
    is one the bulk writer was verified against (server/flush/bulk/); False (``--no-bulk-write``)
    leaves every write to MLflow's own store."""
    fleet: FleetConfig | None = None
    """The NATS JetStream cluster a fleet of receivers shares (``--queue nats://...``); None
    keeps the embedded SQLite queue of one receiver."""

    def __repr__(self) -> str:
        return redacted_repr(self)  # a config dump shows no token, no password in a URI

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"listen must be host:port, got {self.listen!r}")
        self.security.check_listen(self.listen, loopback=is_loopback(host))
        self._check_bounds()
        if self.sqlite_synchronous not in ("NORMAL", "FULL"):
            raise ValueError(
                f"sqlite_synchronous must be NORMAL or FULL, got {self.sqlite_synchronous!r}"
            )
        if self.read_scope not in READ_SCOPES:
            raise ValueError(f"read_scope must be one of {READ_SCOPES}, got {self.read_scope!r}")
        if not self.mlflow_sink and self.jsonl_dir is None:
            raise ValueError("no sink: give --sink mlflow, --sink jsonl:DIR, or both")
        if self.fleet is not None and self.aggregate.enabled:
            raise ValueError("--aggregate needs the embedded queue: it cannot be used with --queue")
        if self.fleet is not None and self.alone:
            raise ValueError("--alone cannot be used with --queue (a fleet shares MLflow)")
        http = self.http_address
        if http is not None and not self.viewer_token and not is_loopback(http[0]):
            raise ValueError(
                f"http_listen {self.http_listen!r} is not a loopback address: a viewer token is"
                f" required (--viewer-token or {envvars.TRACKBRIDGE_VIEWER_TOKEN})"
            )

    def _check_bounds(self) -> None:
        """Refuses numbers out of their range."""
        if not self.flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be positive, got {self.flush_interval_s!r}")
        if self.flush_workers < 1:
            raise ValueError(f"flush_workers must be at least 1, got {self.flush_workers!r}")
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
        if self.disk_reserve_mib < 0:
            raise ValueError(f"disk_reserve_mib must be 0 or more, got {self.disk_reserve_mib!r}")
        if not 0 < self.publish_budget_per_s <= 1e7:
            raise ValueError(
                "publish_budget_per_s (--publish-budget) must be positive and at most 10000000"
                f" calls/s, got {self.publish_budget_per_s!r}"
            )
        if not self.client_timeout_s > 0:
            raise ValueError(f"client_timeout_s must be positive, got {self.client_timeout_s!r}")
        if self.live_points < 2:
            raise ValueError(f"live_points must be at least 2, got {self.live_points!r}")

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The live view's ``(host, port)``, or None when it is ``off``."""
        if self.http_listen == "off":
            return None
        if not self.http_listen:
            port = int(self.listen.rpartition(":")[2])
            return ("127.0.0.1", port + 1 if port else 0)
        host, sep, port_text = self.http_listen.rpartition(":")
        if not sep or not host or not port_text.isdigit():
            raise ValueError(f"http_listen must be host:port or off, got {self.http_listen!r}")
        return (host.strip("[]"), int(port_text))

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sinks as ``--sink`` names them (``mlflow``, ``jsonl:DIR``)."""
        named = ("mlflow",) if self.mlflow_sink else ()
        return named + ((f"jsonl:{self.jsonl_dir}",) if self.jsonl_dir is not None else ())

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
        flush_workers: int | None = None,
        sqlite_synchronous: str | None = None,
        shutdown_timeout_s: float | None = None,
        max_backlog_events: int | None = None,
        disk_reserve_mib: int | None = None,
        publish_budget_per_s: float | None = None,
        run_lease_s: float | None = None,
        http_listen: str | None = None,
        viewer_token: str | None = None,
        client_timeout_s: float | None = None,
        live_points: int | None = None,
        security: SecurityConfig | None = None,
        read_scope: str | None = None,
        sinks: Sequence[str] | None = None,
        aggregate: AggregateConfig | None = None,
        round_as_step: bool | None = None,
        alone: bool | None = None,
        bulk_write: bool | None = None,
        queue: str | None = None,
        flush: bool = True,
        env: Mapping[str, str] = os.environ,
    ) -> ReceiverConfig:
        """Builds a config from explicit values, then the environment, then defaults.

        ``sinks`` are ``--sink`` values (``mlflow``, ``jsonl:DIR``); env ``TRACKBRIDGE_SINKS``
        holds them comma-separated; default ``mlflow``. ``queue`` is ``sqlite`` (the default)
        or ``nats://host:port[,...]`` (env ``TRACKBRIDGE_QUEUE``); ``flush`` False makes a
        fleet receiver only accept (``--no-flush``)."""
        if queue is None:
            queue = env.get(envvars.TRACKBRIDGE_QUEUE, "sqlite")
        fleet = None if queue in ("", "sqlite") else parse_queue_url(queue)
        if fleet is not None and not flush:
            fleet = dataclasses.replace(fleet, flush=False)
        elif not flush:
            raise ValueError("--no-flush needs --queue nats://...: a lone receiver must flush")
        if sinks is None:
            raw_sinks = env.get(envvars.TRACKBRIDGE_SINKS, "")
            sinks = [s.strip() for s in raw_sinks.split(",") if s.strip()] or ["mlflow"]
        mlflow_sink, jsonl_dir = parse_sinks(sinks)
        # A value not given here or in the environment is left out: the field's default
        # (above, the one place each default is written) applies.
        given: dict[str, Any] = {
            "listen": env.get(envvars.TRACKBRIDGE_LISTEN) if listen is None else listen,
            "data_dir": env.get(envvars.TRACKBRIDGE_DATA_DIR) if data_dir is None else data_dir,
            "tracking_uri": (
                env.get(envvars.MLFLOW_TRACKING_URI) if tracking_uri is None else tracking_uri
            ),
            "flush_interval_s": (
                _float(env.get(envvars.TRACKBRIDGE_FLUSH_INTERVAL_S))
                if flush_interval_s is None
                else flush_interval_s
            ),
            "flush_workers": flush_workers,
            "sqlite_synchronous": sqlite_synchronous,
            "shutdown_timeout_s": shutdown_timeout_s,
            "max_backlog_events": max_backlog_events,
            "disk_reserve_mib": disk_reserve_mib,
            "publish_budget_per_s": publish_budget_per_s,
            "run_lease_s": run_lease_s,
            "http_listen": (
                env.get(envvars.TRACKBRIDGE_HTTP_LISTEN) if http_listen is None else http_listen
            ),
            "viewer_token": (
                env.get(envvars.TRACKBRIDGE_VIEWER_TOKEN) if viewer_token is None else viewer_token
            ),
            "client_timeout_s": client_timeout_s,
            "live_points": live_points,
            "security": SecurityConfig.resolve(env=env) if security is None else security,
            "read_scope": (
                env.get(envvars.TRACKBRIDGE_READ_SCOPE) if read_scope is None else read_scope
            ),
            "aggregate": aggregate,
            "round_as_step": round_as_step,
            "alone": alone,
            "bulk_write": bulk_write_from(env) if bulk_write is None else bulk_write,
        }
        values = {k: v for k, v in given.items() if v is not None}
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        return cls(mlflow_sink=mlflow_sink, jsonl_dir=jsonl_dir, fleet=fleet, **values)


def default(name: str) -> Any:
    """The default of the :class:`ReceiverConfig` field ``name`` (for flags' help)."""
    found = {f.name: f for f in dataclasses.fields(ReceiverConfig)}[name]
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    return found.default


def _float(raw: str | None) -> float | None:
    return None if raw is None else float(raw)


def bulk_write_from(env: Mapping[str, str]) -> bool:
    """``TRACKBRIDGE_BULK_WRITE`` (default on); ValueError for a value that is not a switch."""
    raw = env.get(envvars.TRACKBRIDGE_BULK_WRITE, "").strip().lower()
    if not raw:
        return DEFAULT_BULK_WRITE
    if raw not in _OFF + _ON:
        raise ValueError(
            f"{envvars.TRACKBRIDGE_BULK_WRITE} must be one of {_OFF + _ON}, got {raw!r}"
        )
    return raw in _ON


def parse_sinks(sinks: Sequence[str]) -> tuple[bool, Path | None]:
    """``--sink`` values as (MLflow on, the JSON-lines directory); ValueError when bad."""
    mlflow_sink = False
    jsonl_dir: Path | None = None
    for spec in sinks:
        kind, sep, rest = spec.partition(":")
        if spec == "mlflow":
            mlflow_sink = True
        elif kind == "jsonl" and sep and rest:
            if jsonl_dir is not None and Path(rest) != jsonl_dir:
                raise ValueError(f"two JSON-lines directories ({jsonl_dir}, {rest}): give one")
            jsonl_dir = Path(rest)
        else:
            raise ValueError(f"unknown sink {spec!r}: give mlflow or jsonl:DIR")
    return mlflow_sink, jsonl_dir


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def redact_uri(uri: str) -> str:
    """The URI with any password in it replaced, for logs and messages."""
    scheme, sep, rest = uri.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return uri
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
