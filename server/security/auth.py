"""Who is calling: client tokens (the receiver's own, or signed ones valid across the fleet)
and client certificates, checked by a server interceptor.

The interceptor guards the services clients write through (Ingest, Artifacts); Watch has its
own viewer token and health is open. For every guarded call it establishes the caller's
``Identity`` (the client ids it may write as), refuses a missing or bad credential with
UNAUTHENTICATED, bounds the calls one client has in flight, and makes the identity available
to the handler through ``caller()``. Handlers then refuse a batch that claims another client
id (PERMISSION_DENIED).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc

from bridge import envvars
from bridge.protocol import (
    ARTIFACTS_SERVICE,
    AUTHORIZATION_KEY,
    INGEST_SERVICE,
    RETRY_AFTER_KEY,
)
from server.security.fleet import FleetTokens
from server.security.quota import InFlight, LogThrottle
from server.security.tokens import TOKEN_PREFIX, TokenRefused, TokenStore

_logger = logging.getLogger(__name__)

GUARDED_SERVICES = frozenset({INGEST_SERVICE, ARTIFACTS_SERVICE})
_IN_FLIGHT_RETRY_MS = "200"
# Certificate fields (gRPC's auth context) whose values may name the client.
_CERTIFICATE_NAME_KEYS = (
    "x509_common_name",
    "x509_subject_alternative_name",
    "x509_dns_subject_alternative_name",
    "x509_uri_subject_alternative_name",
)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller: the client ids it may write as, and how it proved it."""

    client_ids: frozenset[str]
    proof: str
    """E.g. ``token tbt_1a2b3c`` or ``certificate CN=site-1``; never a secret."""

    @property
    def name(self) -> str:
        """One stable name for logs and per-client limits."""
        return min(self.client_ids)

    def allows(self, client_id: str) -> bool:
        """Whether this caller may write as ``client_id``."""
        return client_id in self.client_ids


_caller: ContextVar[Identity | None] = ContextVar("trackbridge_caller", default=None)


def caller() -> Identity | None:
    """The identity of the call being served; None when the receiver asks for none."""
    return _caller.get()


def shown(value: str, limit: int = 64) -> str:
    """A client-supplied string as it may appear in a message or log: quoted, escaped, cut."""
    return repr(value[:limit] + ("…" if len(value) > limit else ""))


class Refused(Exception):
    """A call refused before its handler runs; the message is safe to send and log."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Authenticator:
    """Turns a call's metadata and TLS peer into an Identity, or refuses it.

    A token ``tbt_...`` is looked up in the receiver's own store; any other is checked as a
    signed token when the receiver holds the fleet's keys (``signed``).
    """

    def __init__(
        self,
        tokens: TokenStore,
        *,
        require_tokens: bool,
        mutual_tls: bool,
        signed: FleetTokens | None = None,
    ) -> None:
        self._tokens = tokens
        self._signed = signed
        self._require_tokens = require_tokens or signed is not None
        self._mutual_tls = mutual_tls

    def authenticate(
        self, metadata: Iterable[tuple[str, Any]], auth_context: Mapping[str, Any]
    ) -> Identity | None:
        """The caller's identity (None on an open receiver); raises Refused."""
        names: frozenset[str] | None = None
        proofs = []
        if self._mutual_tls:
            names = _certificate_names(auth_context)
            if not names:
                raise Refused(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "the client certificate names no client (no common name or DNS/URI"
                    " subject alternative name)",
                )
            proofs.append(f"certificate {min(names)!r}")
        offered = _bearer_token(metadata)
        if offered is None:
            if self._require_tokens or self._tokens.has_any():
                raise Refused(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "this receiver requires a client token (metadata 'authorization: Bearer"
                    f" <token>'; clients set {envvars.TRACKBRIDGE_TOKEN} or"
                    f" {envvars.TRACKBRIDGE_TOKEN_FILE})",
                )
        else:
            try:
                if self._signed is None or offered.startswith(TOKEN_PREFIX):
                    client_id = self._tokens.verify(offered)
                else:
                    client_id = self._signed.verify(offered)
            except TokenRefused as exc:
                raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
            if names is not None and client_id not in names:
                raise Refused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"the token is client {shown(client_id)}'s but the certificate is"
                    f" {shown(min(names))}'s",
                )
            names = frozenset({client_id})
            proofs.append(f"token of {shown(client_id)}")
        return None if names is None else Identity(names, " and ".join(proofs))


def _bearer_token(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The offered bearer token, "" for a malformed header, None when there is none."""
    for key, value in metadata:
        if key == AUTHORIZATION_KEY:
            scheme, _, token = str(value).partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _certificate_names(auth_context: Mapping[str, Any]) -> frozenset[str]:
    names = set()
    for key in _CERTIFICATE_NAME_KEYS:
        for raw in auth_context.get(key, ()):
            name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if name:
                names.add(name)
    return frozenset(names)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every call to the guarded services and bounds calls per client."""

    def __init__(
        self,
        authenticator: Authenticator,
        in_flight: InFlight,
        services: frozenset[str] = GUARDED_SERVICES,
    ) -> None:
        self._authenticator = authenticator
        self._in_flight = in_flight
        self._services = services
        self._log = LogThrottle()
        self.calls_refused = 0
        self.calls_throttled = 0

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        service = method.split("/")[1] if method.count("/") == 2 else ""
        if handler is None or service not in self._services:
            return handler
        metadata = tuple(handler_call_details.invocation_metadata or ())

        async def enter(context: grpc.aio.ServicerContext) -> str:
            return await self._enter(method, metadata, context)

        return _guarded(handler, enter, self._in_flight.release)

    async def _enter(
        self, method: str, metadata: tuple[tuple[str, Any], ...], context: grpc.aio.ServicerContext
    ) -> str:
        try:
            identity = self._authenticator.authenticate(metadata, context.auth_context())
        except Refused as exc:
            self.calls_refused += 1
            if self._log.allow(exc.code.name):
                _logger.warning(
                    "refused %s from %s: %s: %s", method, context.peer(), exc.code.name, exc
                )
            await context.abort(exc.code, exc.message)
        key = identity.name if identity is not None else context.peer()
        if not self._in_flight.acquire(key):
            self.calls_throttled += 1
            if self._log.allow(f"in-flight {key}"):
                _logger.warning(
                    "client %s has %d calls in flight; refusing more",
                    shown(key),
                    self._in_flight.limit,
                )
            context.set_trailing_metadata(((RETRY_AFTER_KEY, _IN_FLIGHT_RETRY_MS),))
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"client {shown(key)} already has {self._in_flight.limit} calls in flight;"
                " wait for one to finish",
            )
        _caller.set(identity)
        return key


def _guarded(
    handler: Any,
    enter: Callable[[grpc.aio.ServicerContext], Awaitable[str]],
    leave: Callable[[str], None],
) -> Any:
    """``handler`` with ``enter`` run before its behaviour and ``leave`` after it."""
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None or handler.stream_unary is not None:
        unary_response = handler.unary_unary or handler.stream_unary

        async def respond(request: Any, context: grpc.aio.ServicerContext) -> Any:
            key = await enter(context)
            try:
                result = unary_response(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                leave(key)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(respond, **codec)
        return grpc.stream_unary_rpc_method_handler(respond, **codec)

    stream_response = handler.unary_stream or handler.stream_stream

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        key = await enter(context)
        try:
            result = stream_response(request, context)
            if inspect.isasyncgen(result):
                async for response in result:
                    yield response
            elif inspect.isawaitable(result):
                await result  # a behaviour that writes with context.write()
            else:
                for response in result:
                    yield response
        finally:
            leave(key)

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream, **codec)
    return grpc.stream_stream_rpc_method_handler(stream, **codec)
