"""How a gRPC client reaches the receiver: TLS trust, client certificate and bearer token.

Shared by the client SDK and the receiver-side viewer tools. A token travels as
``authorization: Bearer <token>`` metadata on every call, added by a channel interceptor.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from bridge import envvars
from bridge.protocol import AUTHORIZATION_KEY
from bridge.secret import read_secret_file, redacted_repr

_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-._~+/=")


@dataclass(frozen=True, slots=True)
class ChannelSecurity:
    """What a client holds to talk to the receiver securely. All paths are PEM files."""

    tls_ca: str = ""
    """CA bundle the receiver's certificate must chain to; setting it turns TLS on."""
    tls_cert: str = ""
    """Client certificate for mutual TLS (its CN or a SAN is the client id); turns TLS on."""
    tls_key: str = ""
    """Private key of ``tls_cert``."""
    token: str = field(default="", repr=False)
    """Bearer token from ``trackbridge token issue``; "" sends none."""

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be given together (or neither)")
        if self.token and not set(self.token) <= _TOKEN_CHARS:
            # Never echo the value: it may be a secret pasted into the wrong place.
            raise ValueError("token has characters a bearer token cannot have (whitespace?)")

    def __repr__(self) -> str:
        return redacted_repr(self)

    @property
    def tls(self) -> bool:
        """Whether the channel uses TLS."""
        return bool(self.tls_ca or self.tls_cert)

    def open_channel(self, address: str, options: tuple[tuple[str, Any], ...]) -> grpc.Channel:
        """A channel to ``address`` with this security; raises ValueError for unreadable files."""
        if self.tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read("tls_ca", self.tls_ca),
                private_key=_read("tls_key", self.tls_key),
                certificate_chain=_read("tls_cert", self.tls_cert),
            )
            channel = grpc.secure_channel(address, credentials, options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        if self.token:
            channel = grpc.intercept_channel(channel, _BearerToken(self.token))
        return channel

    @classmethod
    def resolve(
        cls,
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> ChannelSecurity:
        """Explicit values, else ``TRACKBRIDGE_TLS_*`` and ``TRACKBRIDGE_TOKEN`` (or
        ``TRACKBRIDGE_TOKEN_FILE``) from the environment, else none."""
        if token is None:
            token = env.get(envvars.TRACKBRIDGE_TOKEN)
        if token is None and env.get(envvars.TRACKBRIDGE_TOKEN_FILE):
            path = env[envvars.TRACKBRIDGE_TOKEN_FILE]
            token = read_secret_file(envvars.TRACKBRIDGE_TOKEN_FILE, path)
        return cls(
            tls_ca=env.get(envvars.TRACKBRIDGE_TLS_CA, "") if tls_ca is None else tls_ca,
            tls_cert=env.get(envvars.TRACKBRIDGE_TLS_CERT, "") if tls_cert is None else tls_cert,
            tls_key=env.get(envvars.TRACKBRIDGE_TLS_KEY, "") if tls_key is None else tls_key,
            token=token or "",
        )


def _read(what: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror}") from None


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._metadata = ((AUTHORIZATION_KEY, f"Bearer {token}"),)

    def __repr__(self) -> str:
        return "_BearerToken(***)"

    def _with_token(self, details: Any) -> Any:
        metadata = (*(details.metadata or ()), *self._metadata)
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


class _CallDetails(_Details, grpc.ClientCallDetails):  # type: ignore[misc]
    """Call details with the token added (gRPC wants a ClientCallDetails instance)."""
