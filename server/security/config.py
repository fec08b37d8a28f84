"""The receiver's security settings: TLS, who must prove what, and per-client limits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from bridge import envvars
from bridge.secret import redacted_repr

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BATCH_EVENTS = 100_000
DEFAULT_RATE_EVENTS_PER_S = 1_000_000.0
DEFAULT_RATE_BURST_EVENTS = 2_000_000
DEFAULT_MAX_CALLS_PER_CLIENT = 64
T = TypeVar("T")


@dataclass(frozen=True, slots=True, repr=False)
class SecurityConfig:
    """How the receiver secures its gRPC port. The defaults are safe: plaintext only on
    loopback, tokens required as soon as one is issued, generous but finite limits."""

    tls_cert: str = ""
    """PEM certificate chain served to clients; with ``tls_key`` it turns TLS on. The files are
    re-read when they change, so a renewed certificate needs no restart."""
    tls_key: str = ""
    """PEM private key of ``tls_cert``."""
    tls_client_ca: str = ""
    """PEM CA bundle client certificates must chain to; turns on mutual TLS, and then the
    certificate's common name (or a DNS/URI subject alternative name) is the client id."""
    insecure_plaintext: bool = False
    """Allow plaintext gRPC on a non-loopback address (tokens then travel in the clear)."""
    require_tokens: bool = False
    """Require a client token even while the token store is empty."""
    token_keys_file: str = ""
    """The fleet's keys for signed tokens (``<key id> <secret>`` lines): tokens signed with
    any of them are valid here without being issued here. Re-read when it changes; giving
    keys makes client tokens required."""
    token_keys: str = field(default="", repr=False)
    """The same keys as text (from the environment), when there is no file."""
    token_revocations_file: str = ""
    """The fleet's revocation list of signed tokens; re-read when it changes."""
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """Largest gRPC message accepted (larger ones get RESOURCE_EXHAUSTED from gRPC)."""
    max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS
    """Most events in one batch (more: INVALID_ARGUMENT; the client must send smaller ones)."""
    rate_events_per_s: float = DEFAULT_RATE_EVENTS_PER_S
    """Per-client sustained rate, events per second (each call counts at least 1); 0: none."""
    rate_burst_events: int = DEFAULT_RATE_BURST_EVENTS
    """Per-client burst above the sustained rate, in events."""
    max_calls_per_client: int = DEFAULT_MAX_CALLS_PER_CLIENT
    """Calls (streams included) one client may have in flight at once; 0: no limit."""

    def __repr__(self) -> str:
        return redacted_repr(self)

    def __post_init__(self) -> None:
        if self.token_keys_file and self.token_keys:
            raise ValueError(
                f"give the token keys as a file ({envvars.TRACKBRIDGE_TOKEN_KEYS_FILE}) or as"
                f" text ({envvars.TRACKBRIDGE_TOKEN_KEYS}), not both"
            )
        if self.token_revocations_file and not self.signed_tokens:
            raise ValueError("a token revocation list needs the fleet's token keys")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be given together (or neither)")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        if self.max_message_bytes < 1024:
            raise ValueError(
                f"max_message_bytes must be at least 1024, got {self.max_message_bytes!r}"
            )
        if self.max_batch_events < 1:
            raise ValueError(f"max_batch_events must be at least 1, got {self.max_batch_events!r}")
        if not self.rate_events_per_s >= 0:
            raise ValueError(
                "rate_events_per_s must be 0 (no limit) or positive,"
                f" got {self.rate_events_per_s!r}"
            )
        if self.rate_burst_events < 1:
            raise ValueError(
                f"rate_burst_events must be at least 1, got {self.rate_burst_events!r}"
            )
        if self.max_calls_per_client < 0:
            raise ValueError(
                f"max_calls_per_client must be 0 (no limit) or more, got"
                f" {self.max_calls_per_client!r}"
            )

    @property
    def tls(self) -> bool:
        """Whether gRPC is served over TLS."""
        return bool(self.tls_cert)

    @property
    def signed_tokens(self) -> bool:
        """Whether signed (fleet) tokens are accepted, and so tokens required."""
        return bool(self.token_keys_file or self.token_keys)

    @property
    def mutual_tls(self) -> bool:
        """Whether clients must present a certificate."""
        return bool(self.tls_client_ca)

    def check_listen(self, listen: str, *, loopback: bool) -> None:
        """Refuses plaintext on a non-``loopback`` address unless explicitly allowed."""
        if self.tls or self.insecure_plaintext or loopback:
            return
        raise ValueError(
            f"refusing to serve plaintext gRPC on {listen}: clients' tokens and data would"
            " cross the network unencrypted. Give --tls-cert and --tls-key (or"
            f" {envvars.TRACKBRIDGE_SERVE_TLS_CERT} and {envvars.TRACKBRIDGE_SERVE_TLS_KEY}),"
            " or --insecure-plaintext if something else encrypts the network"
        )

    @classmethod
    def resolve(
        cls,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_client_ca: str | None = None,
        insecure_plaintext: bool | None = None,
        require_tokens: bool | None = None,
        token_keys_file: str | None = None,
        token_revocations_file: str | None = None,
        max_message_bytes: int | None = None,
        max_batch_events: int | None = None,
        rate_events_per_s: float | None = None,
        rate_burst_events: int | None = None,
        max_calls_per_client: int | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> SecurityConfig:
        """Explicit values (flags), then ``TRACKBRIDGE_SERVE_TLS_*`` and
        ``TRACKBRIDGE_TOKEN_*``, then defaults."""
        d = cls()
        return cls(
            tls_cert=_given(tls_cert, env.get(envvars.TRACKBRIDGE_SERVE_TLS_CERT, "")),
            tls_key=_given(tls_key, env.get(envvars.TRACKBRIDGE_SERVE_TLS_KEY, "")),
            tls_client_ca=_given(
                tls_client_ca, env.get(envvars.TRACKBRIDGE_SERVE_TLS_CLIENT_CA, "")
            ),
            insecure_plaintext=_given(insecure_plaintext, d.insecure_plaintext),
            require_tokens=_given(require_tokens, d.require_tokens),
            token_keys_file=_given(
                token_keys_file, env.get(envvars.TRACKBRIDGE_TOKEN_KEYS_FILE, "")
            ),
            token_keys=env.get(envvars.TRACKBRIDGE_TOKEN_KEYS, "")
            if token_keys_file is None
            else "",
            token_revocations_file=_given(
                token_revocations_file, env.get(envvars.TRACKBRIDGE_TOKEN_REVOCATIONS_FILE, "")
            ),
            max_message_bytes=_given(max_message_bytes, d.max_message_bytes),
            max_batch_events=_given(max_batch_events, d.max_batch_events),
            rate_events_per_s=_given(rate_events_per_s, d.rate_events_per_s),
            rate_burst_events=_given(rate_burst_events, d.rate_burst_events),
            max_calls_per_client=_given(max_calls_per_client, d.max_calls_per_client),
        )


def _given(value: T | None, default: T) -> T:
    return default if value is None else value
