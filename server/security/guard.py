"""Everything that secures the receiver's gRPC port, in one object for the app to hold: the
listening credentials (TLS, reloaded on change), the authenticating interceptor, per-batch
admission and the message size limit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc

from server.security.admission import Admission
from server.security.auth import Authenticator, AuthInterceptor
from server.security.config import SecurityConfig
from server.security.fleet import FleetTokens
from server.security.quota import InFlight
from server.security.tls import CertificateFiles
from server.security.tokens import TokenStore

_logger = logging.getLogger(__name__)

TOKENS_FILE = "tokens.db"
_MESSAGE_LIMIT_OPTION = "grpc.max_receive_message_length"


class Guard:
    """The receiver's gRPC security, built from its SecurityConfig and data directory."""

    def __init__(self, config: SecurityConfig, data_dir: Path) -> None:
        self.config = config
        self.tokens = TokenStore(data_dir / TOKENS_FILE)
        self._certificates = CertificateFiles(config) if config.tls else None
        self.admission = Admission(config)
        self.signed = fleet_tokens(config)
        self.authenticator = Authenticator(
            self.tokens,
            require_tokens=config.require_tokens,
            mutual_tls=config.mutual_tls,
            signed=self.signed,
        )
        """Who a call's metadata names (the interceptor's, and the tracking service's reads)."""
        self.interceptor = AuthInterceptor(
            self.authenticator, InFlight(config.max_calls_per_client)
        )

    def server_options(self, base: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
        """``base`` with the configured message size limit."""
        kept = tuple(option for option in base if option[0] != _MESSAGE_LIMIT_OPTION)
        return (*kept, (_MESSAGE_LIMIT_OPTION, self.config.max_message_bytes))

    def bind(self, server: grpc.aio.Server, listen: str) -> int:
        """Adds the listening port (TLS when configured); returns its number, 0 on failure."""
        if self._certificates is None:
            port: int = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, self._certificates.credentials())
        self._log_posture(listen)
        return port

    def _log_posture(self, listen: str) -> None:
        cfg = self.config
        if cfg.mutual_tls:
            transport = "mutual TLS (client certificates name the client)"
        elif cfg.tls:
            transport = "TLS"
        else:
            transport = "plaintext" if cfg.insecure_plaintext else "plaintext (loopback only)"
        issued = len(self.tokens.list_tokens())
        if self.signed is not None:
            tokens = (
                f"client tokens required ({issued} issued here; signed tokens of keys"
                f" {', '.join(self.signed.key_ids)})"
            )
        elif cfg.require_tokens or issued:
            tokens = f"client tokens required ({issued} issued)"
        else:
            tokens = "client tokens not required (none issued)"
        _logger.info("gRPC on %s: %s; %s", listen, transport, tokens)

    def close(self) -> None:
        """Closes the token store."""
        self.tokens.close()


def fleet_tokens(config: SecurityConfig) -> FleetTokens | None:
    """The verifier of signed tokens ``config`` asks for, None when it asks for none.

    Raises:
        ValueError: A keys or revocation file cannot be read or is malformed (one line that
            names the file, never a secret).
    """
    if not config.signed_tokens:
        return None
    return FleetTokens(config.token_keys_file, config.token_keys, config.token_revocations_file)
