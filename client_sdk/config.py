"""Client configuration: explicit argument > environment > default."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from bridge import envvars
from bridge.channel import ChannelSecurity
from bridge.secret import redacted_repr
from client_sdk._targets import split_receivers

DEFAULT_RECEIVER = "127.0.0.1:50551"
DEFAULT_JOB = "default"


@dataclass(frozen=True, slots=True)
class WriterConfig:
    """How a Writer reaches the receiver and batches what it logs."""

    receiver: str = DEFAULT_RECEIVER
    """Receiver address ``host:port``, or several, comma-separated: the client uses one at a
    time, picked at random, and moves to another when it fails (see ``_targets.py``)."""
    client_id: str = ""
    """This client's id; the receiver makes one MLflow run per client and job."""
    job: str = DEFAULT_JOB
    """Job name: the MLflow experiment and the parent run of every client's run."""
    max_batch_events: int = 5000
    """Largest number of events sent in one batch."""
    linger_s: float = 0.2
    """The longest the sender waits for a batch to fill before sending what it has (and its
    wait before the receiver's first answer): within it, the wait is what the receiver
    advises for the size of its fleet, or longer when its answers slow down
    (client_sdk/_linger.py)."""
    min_linger_s: float = 0.02
    """The shortest such wait (a few clients, a quiet receiver); set it to ``linger_s`` for a
    fixed wait."""
    max_buffer_events: int = 1_000_000
    """Events waiting for the sender thread before new ones are dropped and counted (reached
    only when both memory and spool are full, or the sender thread is stuck)."""
    spool_dir: str = ""
    """Directory of the durable spool; "" keeps unacknowledged events in memory only."""
    max_spool_bytes: int = 1 << 30
    """Spool size past which new events stay in the buffer (then are dropped, counted)."""
    max_memory_bytes: int = 64 << 20
    """Serialized batches held in memory; past it they are read back from the spool."""
    max_staged_artifact_bytes: int = 20 << 30
    """Staging quota: bytes of artifacts staged and not yet acknowledged past which
    ``log_artifact`` raises ``ArtifactNotStaged`` (as it does when the disk is too full)."""
    rpc_timeout_s: float = 10.0
    """Deadline of one Publish call."""
    retry_max_backoff_s: float = 5.0
    """Longest pause between two attempts to send a batch."""
    heartbeat_s: float = 60.0
    """A quiet open run is reported alive this often (the receiver's run lease is longer)."""
    close_timeout_s: float = 10.0
    """Budget for draining at interpreter exit."""
    tls_ca: str = ""
    """PEM CA bundle the receiver's certificate must chain to; setting it turns TLS on."""
    tls_cert: str = ""
    """PEM client certificate, for a receiver that requires mutual TLS (turns TLS on)."""
    tls_key: str = ""
    """PEM private key of ``tls_cert``."""
    system_metrics: bool = False
    """Sample the host's CPU, memory, disk, network and NVIDIA GPUs into the active run
    (``client_sdk.system_metrics``; needs the ``system`` extra)."""
    system_metrics_interval_s: float = 10.0
    """Seconds between two system metrics samples."""
    token: str = field(default="", repr=False)
    """Bearer token from ``trackbridge token issue``, bound to this client id; "" sends none.
    Shown as ``***`` in reprs."""

    def __repr__(self) -> str:
        return redacted_repr(self)

    @property
    def security(self) -> ChannelSecurity:
        """TLS and token settings of the channel to the receiver."""
        return ChannelSecurity(self.tls_ca, self.tls_cert, self.tls_key, self.token)

    def __post_init__(self) -> None:
        _ = self.security  # raises ValueError for inconsistent TLS or token settings
        split_receivers(self.receiver)  # raises ValueError naming the value
        if not self.client_id:
            raise ValueError("client_id must not be empty")
        if not self.job:
            raise ValueError("job must not be empty")
        for name in (
            "max_batch_events",
            "max_buffer_events",
            "max_spool_bytes",
            "max_memory_bytes",
            "max_staged_artifact_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in (
            "linger_s",
            "min_linger_s",
            "rpc_timeout_s",
            "retry_max_backoff_s",
            "close_timeout_s",
            "heartbeat_s",
            "system_metrics_interval_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")

    def overridden(self, **values: object) -> WriterConfig:
        """This config with the fields given that are not None replaced (checked again)."""
        given = {name: value for name, value in values.items() if value is not None}
        return dataclasses.replace(self, **given) if given else self  # type: ignore[arg-type]

    @classmethod
    def resolve(
        cls,
        receiver: str | None = None,
        client_id: str | None = None,
        job: str | None = None,
        spool_dir: str | None = None,
        env: Mapping[str, str] = os.environ,
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        system_metrics: bool | None = None,
        **overrides: float,
    ) -> WriterConfig:
        """Builds a config from explicit arguments, then the environment, then defaults.

        TLS and token settings come from ``TRACKBRIDGE_TLS_CA``/``_CERT``/``_KEY`` and
        ``TRACKBRIDGE_TOKEN`` (or ``TRACKBRIDGE_TOKEN_FILE``) when not given; system metrics
        from ``TRACKBRIDGE_SYSTEM_METRICS`` and ``TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S``.
        """
        security = ChannelSecurity.resolve(
            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, token=token, env=env
        )
        if receiver is None:
            receiver = env.get(envvars.TRACKBRIDGE_RECEIVER, DEFAULT_RECEIVER)
        if client_id is None:
            client_id = env.get(envvars.TRACKBRIDGE_CLIENT_ID, socket.gethostname())
        if job is None:
            job = env.get(envvars.TRACKBRIDGE_JOB, DEFAULT_JOB)
        if spool_dir is None:
            spool_dir = env.get(envvars.TRACKBRIDGE_SPOOL_DIR, default_spool_dir(env))
        if system_metrics is None:
            system_metrics = env_flag(env, envvars.TRACKBRIDGE_SYSTEM_METRICS)
        raw_interval = env.get(envvars.TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S)
        if raw_interval is not None and "system_metrics_interval_s" not in overrides:
            overrides["system_metrics_interval_s"] = _env_float(
                envvars.TRACKBRIDGE_SYSTEM_METRICS_INTERVAL_S, raw_interval
            )
        return cls(
            receiver=receiver,
            client_id=client_id,
            job=job,
            spool_dir=spool_dir,
            tls_ca=security.tls_ca,
            tls_cert=security.tls_cert,
            tls_key=security.tls_key,
            token=security.token,
            system_metrics=system_metrics,
            **overrides,  # type: ignore[arg-type]
        )


def default_spool_dir(env: Mapping[str, str] = os.environ) -> str:
    """``$XDG_CACHE_HOME/trackbridge/spool``, else ``~/.cache/trackbridge/spool``."""
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "trackbridge", "spool")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """A boolean environment variable (``1``/``true``/``yes``/``on`` or ``0``/``false``/...).

    Raises:
        ValueError: Any other value, naming the variable.
    """
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise ValueError(f"{name} must be 1 or 0 (true or false), got {env[name]!r}")


def _env_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
