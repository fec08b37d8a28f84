"""Signed client tokens: valid on every receiver that holds the fleet's keys, none issued there.

A signed token is a JSON Web Token (RFC 7519) made and checked by PyJWT, signed with
HMAC-SHA256 (``HS256``) under a key the fleet shares. Its claims: ``sub`` the client id,
``exp`` its expiry, ``iat`` when it was issued, ``jti`` its id (shown as ``tbs_<id>``, the
name revocation lists use) and ``aud`` ``trackbridge``; its header's ``kid`` names the key.

Keys are text, one per line, ``<key id> <secret>`` (the secret: URL-safe base64 of at least
32 random bytes; ``#`` starts a comment). A receiver verifies with every key listed; ``token
issue`` signs with the first (or the one it is told). Rotating is adding a key, issuing with
it, and removing the old one once its tokens have expired or been replaced. Nothing here ever
puts a secret, or a token, in a message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import jwt

from server.security.tokens import MAX_CLIENT_ID_LENGTH, TokenRefused

SIGNED_PREFIX = "tbs_"
"""How a signed token's id is shown (and listed in revocation lists)."""
AUDIENCE = "trackbridge"
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_TOKEN_ID_RE = re.compile(r"^[0-9a-f]{12,64}$")
_ID_BYTES = 6
_REQUIRED = ("exp", "iat", "sub", "jti", "aud")
_INVALID = "the client token is not valid (unknown or wrong)"


@dataclass(frozen=True, slots=True)
class TokenKey:
    """One signing/verification key of the fleet."""

    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SignedClaims:
    """What a verified signed token says (never its signature)."""

    client_id: str
    token_id: str
    """Without the ``tbs_`` prefix."""
    key_id: str
    issued_at_s: int
    expires_at_s: int

    @property
    def shown_id(self) -> str:
        """The token's id as ``token revoke`` and revocation lists take it."""
        return f"{SIGNED_PREFIX}{self.token_id}"


def parse_keys(text: str, where: str) -> tuple[TokenKey, ...]:
    """The keys in ``text`` (first: the signing key); ValueError names ``where`` and the
    line, never a secret."""
    keys: list[TokenKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key_id, _, encoded = line.partition(" ")
        encoded = encoded.strip()
        if not _KEY_ID_RE.match(key_id) or not encoded or " " in encoded:
            raise ValueError(
                f"{where} line {number}: expected '<key id> <secret>' (key id: 1 to 64 of"
                " A-Z a-z 0-9 . _ -)"
            )
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise ValueError(
                f"{where} line {number}: key {key_id}'s secret is not base64"
            ) from None
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"{where} line {number}: key {key_id}'s secret is {len(secret)} bytes; at least"
                f" {MIN_SECRET_BYTES} are needed (make one with `trackbridge token keygen`)"
            )
        if any(k.key_id == key_id for k in keys):
            raise ValueError(f"{where} line {number}: key id {key_id} is listed twice")
        keys.append(TokenKey(key_id, secret))
    if not keys:
        raise ValueError(f"{where} holds no key (lines '<key id> <secret>')")
    return tuple(keys)


def new_key_line(key_id: str) -> str:
    """A fresh key, as a line of a keys file."""
    if not _KEY_ID_RE.match(key_id):
        raise ValueError(f"key id must be 1 to 64 of A-Z a-z 0-9 . _ -, got {key_id[:80]!r}")
    secret = base64.urlsafe_b64encode(secrets.token_bytes(MIN_SECRET_BYTES)).decode().rstrip("=")
    return f"{key_id} {secret}"


def sign(
    keys: tuple[TokenKey, ...],
    client_id: str,
    expires_in_s: float,
    *,
    key_id: str | None = None,
    now_s: float | None = None,
) -> tuple[str, SignedClaims]:
    """A new signed token for ``client_id``, and what it says.

    Args:
        keys: The fleet's keys; the first signs unless ``key_id`` names another.
        client_id: The client the token is bound to.
        expires_in_s: Seconds until it expires (more than 0).
        key_id: The key to sign with.
        now_s: The current time (tests pass one).
    """
    if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH:
        raise ValueError(f"client id must be 1 to {MAX_CLIENT_ID_LENGTH} characters")
    if not expires_in_s > 0:
        raise ValueError(f"a signed token must expire later than now, got {expires_in_s!r} s")
    key = keys[0] if key_id is None else next((k for k in keys if k.key_id == key_id), None)
    if key is None:
        raise ValueError(f"no key {key_id!r} among the keys given")
    now = int(time.time() if now_s is None else now_s)
    claims = SignedClaims(
        client_id,
        secrets.token_hex(_ID_BYTES),
        key.key_id,
        now,
        now + max(1, round(expires_in_s)),
    )
    payload = {
        "sub": client_id,
        "jti": claims.token_id,
        "iat": claims.issued_at_s,
        "exp": claims.expires_at_s,
        "aud": AUDIENCE,
    }
    token = jwt.encode(payload, key.secret, algorithm=ALGORITHM, headers={"kid": key.key_id})
    return token, claims


def verify(token: str, keys: Mapping[str, TokenKey]) -> SignedClaims:
    """What a signed token says once its key, signature, audience and expiry check out;
    raises TokenRefused (message safe to send: it never echoes the token)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenRefused(_INVALID) from None
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None or header.get("alg") != ALGORITHM:
        raise TokenRefused(
            "the client token is signed with a key this receiver does not hold (unknown,"
            " or rotated out)"
            if key is None and isinstance(kid, str) and _KEY_ID_RE.match(kid)
            else _INVALID
        )
    try:
        return _decode(token, key, verify_exp=True)
    except jwt.ExpiredSignatureError:
        expired = True
    except jwt.InvalidTokenError:
        expired = False
    if expired:
        # PyJWT checks the signature before the expiry: the claims may be named.
        with contextlib.suppress(jwt.InvalidTokenError):
            claims = _decode(token, key, verify_exp=False)
            at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(claims.expires_at_s))
            raise TokenRefused(f"client token {claims.shown_id} expired at {at}; issue a new one")
    raise TokenRefused(_INVALID)


def _decode(token: str, key: TokenKey, *, verify_exp: bool) -> SignedClaims:
    raw = jwt.decode(
        token,
        key.secret,
        algorithms=[ALGORITHM],
        audience=AUDIENCE,
        # Issue times are not checked against this clock: a fleet's clocks differ by seconds.
        options={"require": list(_REQUIRED), "verify_iat": False, "verify_exp": verify_exp},
    )
    sub, jti, iat, exp = (raw.get(name) for name in ("sub", "jti", "iat", "exp"))
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_CLIENT_ID_LENGTH:
        raise jwt.InvalidTokenError("bad subject")
    if not isinstance(jti, str) or not _TOKEN_ID_RE.match(jti):
        raise jwt.InvalidTokenError("bad token id")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise jwt.InvalidTokenError("bad times")
    return SignedClaims(sub, jti, key.key_id, iat, exp)


def token_id_of(text: str) -> str | None:
    """The bare id in ``tbs_<id>`` (or a bare id), None when it is not one."""
    bare = text.strip().removeprefix(SIGNED_PREFIX)
    return bare if _TOKEN_ID_RE.match(bare) else None


def key_map(keys: Iterable[TokenKey]) -> dict[str, TokenKey]:
    """Keys by id, for :func:`verify`."""
    return {k.key_id: k for k in keys}
