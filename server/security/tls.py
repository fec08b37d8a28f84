"""The receiver's TLS: certificate files checked at start and re-read when they change.

gRPC asks for the certificate configuration at every new handshake; the files are re-read
only when their inode, size or modification time changed, and a renewed pair that does not
load (half written, key not matching) is logged and skipped while the previous one serves on.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bridge.errors import StartupError
from server.security.config import SecurityConfig

_logger = logging.getLogger(__name__)


class CertificateError(StartupError, ValueError):
    """A certificate, key or CA file that cannot serve."""


def _read(what: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"{what} {path}: cannot read: {exc.strerror}") from None


def _check_pair(cert_path: str, cert_pem: bytes, key_pem: bytes) -> x509.Certificate:
    """The leaf certificate, once it and the key are known to belong together."""
    try:
        certificate = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError:
        raise CertificateError(f"TLS certificate {cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError(
            "TLS key: not an unencrypted PEM private key (the file's contents are not shown)"
        ) from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, spki) != certificate.public_key().public_bytes(der, spki):
        raise CertificateError(f"TLS key does not match the certificate {cert_path}")
    return certificate


def _check_ca(path: str, pem: bytes) -> None:
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateError(f"client CA bundle {path}: no PEM certificate in it") from None


class CertificateFiles:
    """Serves the certificate, key and (for mutual TLS) client CA from files, reloaded when
    they change."""

    def __init__(self, config: SecurityConfig) -> None:
        self._paths = [p for p in (config.tls_cert, config.tls_key, config.tls_client_ca) if p]
        self._cert = config.tls_cert
        self._key = config.tls_key
        self._client_ca = config.tls_client_ca
        self._lock = threading.Lock()
        self._stamp = self._signature()
        self._initial = self._load()

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up renewed files at the next handshake."""
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self._fetch,
            require_client_authentication=bool(self._client_ca),
        )

    def _signature(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in self._paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((-1, -1, -1))
            else:
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert_pem = _read("TLS certificate", self._cert)
        key_pem = _read("TLS key", self._key)
        certificate = _check_pair(self._cert, cert_pem, key_pem)
        ca_pem = None
        if self._client_ca:
            ca_pem = _read("client CA bundle", self._client_ca)
            _check_ca(self._client_ca, ca_pem)
        expires = certificate.not_valid_after_utc
        if expires <= datetime.datetime.now(datetime.timezone.utc):
            _logger.error("TLS certificate %s expired on %s", self._cert, expires.isoformat())
        else:
            _logger.info("TLS certificate %s valid until %s", self._cert, expires.isoformat())
        return grpc.ssl_server_certificate_configuration(
            [(key_pem, cert_pem)], root_certificates=ca_pem
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC on its own thread before each handshake: None keeps the current one.
        with self._lock:
            stamp = self._signature()
            if stamp == self._stamp:
                return None
            self._stamp = stamp
            try:
                configuration = self._load()
            except Exception as exc:  # gRPC's thread must get an answer, not an exception
                _logger.error("not reloading TLS files: %s; serving the previous ones", exc)
                return None
            _logger.info("reloaded the TLS certificate from %s", self._cert)
            return configuration
