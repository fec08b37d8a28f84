"""Client tokens: issued once, stored only as salted hashes, revocable, bound to one client id.

A token reads ``tbt_<id>.<secret>``: the id is public (it names the token in ``token list`` and
``token revoke``), the secret is 256 random bits. Only ``sha256(salt + secret)`` is stored. A
slow password hash would buy nothing against 256 random bits and would cost every call, so a
plain salted SHA-256, compared in constant time, is the right tool here.

The store is ``tokens.db`` (SQLite, WAL) in the receiver's data directory, readable by its
owner only. ``trackbridge token`` writes it while the receiver runs; the receiver sees every
change at the next call (it re-reads the table when SQLite's ``data_version`` moves).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

TOKEN_PREFIX = "tbt_"  # noqa: S105 - a prefix, not a secret
_ID_BYTES = 6
_SECRET_BYTES = 32
_SALT_BYTES = 16
MAX_CLIENT_ID_LENGTH = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    salt BLOB NOT NULL,
    digest BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown about a token: never its secret."""

    token_id: str
    client_id: str
    created_ms: int
    revoked_ms: int
    """0 while the token is valid."""


@dataclass(frozen=True, slots=True)
class _Entry:
    client_id: str
    salt: bytes
    digest: bytes
    revoked: bool


class TokenRefused(Exception):
    """A token that is malformed, unknown, wrong or revoked; the message is safe to send."""


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TokenStore:
    """The receiver's table of client tokens. One instance per thread (an SQLite connection)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Created owner-only before SQLite opens it (its -wal/-shm files take this mode).
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.path = path
        self._conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._version = -1
        self._entries: dict[str, _Entry] = {}

    def close(self) -> None:
        """Closes the database."""
        self._conn.close()

    def issue(self, client_id: str) -> str:
        """Creates a token for ``client_id`` and returns it; it cannot be shown again."""
        if not client_id or len(client_id) > MAX_CLIENT_ID_LENGTH:
            raise ValueError(f"client id must be 1 to {MAX_CLIENT_ID_LENGTH} characters")
        token_id = secrets.token_hex(_ID_BYTES)
        secret = secrets.token_urlsafe(_SECRET_BYTES)
        salt = secrets.token_bytes(_SALT_BYTES)
        self._conn.execute(
            "INSERT INTO tokens (token_id, client_id, salt, digest, created_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_id, client_id, salt, _digest(salt, secret), _now_ms()),
        )
        self._version = -1  # data_version does not move for this connection's own writes
        return f"{TOKEN_PREFIX}{token_id}.{secret}"

    def revoke(self, token_id: str) -> bool:
        """Revokes one token by its id; False when no valid token has that id."""
        token_id = token_id.removeprefix(TOKEN_PREFIX).split(".", 1)[0]
        cur = self._conn.execute(
            "UPDATE tokens SET revoked_ms = ? WHERE token_id = ? AND revoked_ms = 0",
            (_now_ms(), token_id),
        )
        self._version = -1
        return cur.rowcount > 0

    def revoke_client(self, client_id: str) -> int:
        """Revokes every valid token of a client; returns how many."""
        cur = self._conn.execute(
            "UPDATE tokens SET revoked_ms = ? WHERE client_id = ? AND revoked_ms = 0",
            (_now_ms(), client_id),
        )
        self._version = -1
        return cur.rowcount

    def list_tokens(self) -> list[TokenInfo]:
        """Every token ever issued, oldest first (revoked ones included)."""
        rows = self._conn.execute(
            "SELECT token_id, client_id, created_ms, revoked_ms FROM tokens"
            " ORDER BY created_ms, token_id"
        ).fetchall()
        return [TokenInfo(*row) for row in rows]

    def has_any(self) -> bool:
        """Whether any token was ever issued: from then on every client needs one (revoking
        them all must not open the receiver to anyone)."""
        self._refresh()
        return bool(self._entries)

    def verify(self, token: str) -> str:
        """The client id a token belongs to; raises TokenRefused (message safe to send)."""
        self._refresh()
        body = token.removeprefix(TOKEN_PREFIX)
        token_id, dot, secret = body.partition(".")
        entry = self._entries.get(token_id) if dot and token.startswith(TOKEN_PREFIX) else None
        if entry is None or not hmac.compare_digest(_digest(entry.salt, secret), entry.digest):
            raise TokenRefused("the client token is not valid (unknown or wrong)")
        if entry.revoked:
            raise TokenRefused(f"client token {TOKEN_PREFIX}{token_id} was revoked")
        return entry.client_id

    def _refresh(self) -> None:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return
        rows = self._conn.execute(
            "SELECT token_id, client_id, salt, digest, revoked_ms FROM tokens"
        ).fetchall()
        self._entries = {r[0]: _Entry(r[1], r[2], r[3], bool(r[4])) for r in rows}
        self._version = version
