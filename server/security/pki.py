"""A small certificate authority for one deployment: the CA, the receiver's certificate and the
sites' client certificates (``trackbridge tls init``), made with ``cryptography``.

Keys are ECDSA P-256. Every file is created new, never overwritten: keys owner-only (0600),
certificates 0644. The receiver serves ``receiver.pem``/``receiver.key`` and, for mutual TLS,
trusts ``ca.pem`` for client certificates, whose common name is the client id.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
"""A CA made here is valid ten years; the certificates it signs for ``--days``."""


@dataclass(frozen=True)
class Authority:
    """A CA's certificate and key, as loaded or made."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Creates ``path`` with ``mode`` (whatever the umask) and writes ``data``; refuses to
    replace a file that exists."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(cert_path: Path, key_path: Path, name: str) -> Authority:
    """A self-signed CA, written to ``cert_path`` (0644) and ``key_path`` (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_new(key_path, _key_pem(key), 0o600)
    write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Authority(cert, key)


def load_ca(cert_path: Path, key_path: Path) -> Authority:
    """The CA a previous ``tls init`` made (to sign more sites' certificates)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an EC private key")
    if cert.public_key() != key.public_key():
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return Authority(cert, key)


def subject_names(names: list[str]) -> list[x509.GeneralName]:
    """DNS names and IP addresses, as a certificate's subject alternative names."""
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make_leaf(
    ca: Authority,
    cert_path: Path,
    key_path: Path,
    *,
    common_name: str,
    names: list[str],
    server: bool,
    days: int,
) -> None:
    """A certificate signed by ``ca`` for a receiver (``server``) or a client, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(hours=1))
        .not_valid_after(_now() + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(subject_names(names)), critical=False
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    write_new(key_path, _key_pem(key), 0o600)
    write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
