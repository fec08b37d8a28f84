"""Fleet mode's settings, read from the ``--queue`` URL.

``nats://host:4222[,host2:4222,...][?replicas=3&partitions=16&ack_wait_s=30]``: the servers of
one NATS cluster, and how the fleet's stream is made the first time (a later receiver finds the
stream and its consumers as the first one made them). The query keeps fleet mode to one flag.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

SCHEME = "nats://"
_KNOWN = ("replicas", "partitions", "ack_wait_s", "max_bytes")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Where the fleet's JetStream is, and how its stream is laid out."""

    servers: tuple[str, ...]
    """NATS server URLs (``nats://host:port``), all of one cluster."""
    replicas: int = 3
    """Copies JetStream keeps of every batch and record (3 in production; 1 for one server)."""
    partitions: int = 16
    """Runs are hashed into this many ordered lanes; at most this many flush at once. Fixed
    when the stream is made: changing it later would reorder runs."""
    ack_wait_s: float = 30.0
    """How long a flusher may hold a batch without a heartbeat before JetStream gives it to
    another flusher (a dead flusher's batches wait this long)."""
    max_bytes: int = 1 << 30
    """Bytes the stream holds at most; past that, clients are told to back off."""
    publish_timeout_s: float = 2.0
    """How long a receiver waits for JetStream's publish ack before telling the client to retry."""
    max_message_bytes: int = 1 << 20
    """A client batch is split at event boundaries into messages up to this size."""
    flush: bool = True
    """Whether this receiver's flusher takes batches from the fleet's lanes (``serve
    --no-flush`` leaves that to ``trackbridge flush`` and the other receivers)."""

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("--queue nats:// needs at least one host:port")
        if self.replicas not in (1, 3, 5):
            raise ValueError(f"--queue replicas must be 1, 3 or 5, got {self.replicas}")
        if not 1 <= self.partitions <= 256:
            raise ValueError(f"--queue partitions must be 1..256, got {self.partitions}")
        if not self.ack_wait_s >= 1:
            raise ValueError(f"--queue ack_wait_s must be at least 1, got {self.ack_wait_s}")
        if self.max_bytes < self.max_message_bytes:
            # A smaller stream could refuse a batch's message even empty: it would never go.
            raise ValueError(
                f"--queue max_bytes must be at least {self.max_message_bytes} (one message of"
                f" the most), got {self.max_bytes}"
            )


def is_fleet_url(text: str) -> bool:
    """Whether a ``--queue`` value names a NATS cluster (else it is the embedded SQLite queue)."""
    return text.startswith(SCHEME)


def parse_queue_url(text: str) -> FleetConfig:
    """The settings a ``--queue nats://...`` value gives; ValueError names what is wrong."""
    if not is_fleet_url(text):
        raise ValueError(f"--queue must be sqlite or nats://host:port[,...], got {text!r}")
    hosts, _, query = text[len(SCHEME) :].partition("?")
    servers = []
    for host in hosts.split(","):
        name, sep, port = host.strip().rpartition(":")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--queue: {host!r} is not host:port (e.g. nats://127.0.0.1:4222)")
        servers.append(f"{SCHEME}{name}:{port}")
    options = urllib.parse.parse_qs(query, strict_parsing=bool(query))
    unknown = sorted(set(options) - set(_KNOWN))
    if unknown:
        raise ValueError(f"--queue: unknown option {unknown[0]!r} (known: {', '.join(_KNOWN)})")
    values = {name: vals[-1] for name, vals in options.items()}
    try:
        return FleetConfig(
            servers=tuple(servers),
            replicas=int(values.get("replicas", 3 if len(servers) >= 3 else 1)),
            partitions=int(values.get("partitions", 16)),
            ack_wait_s=float(values.get("ack_wait_s", 30.0)),
            max_bytes=int(values.get("max_bytes", 1 << 30)),
        )
    except ValueError as exc:
        if "--queue" in str(exc):
            raise
        raise ValueError(f"--queue: a number was expected ({exc})") from None
