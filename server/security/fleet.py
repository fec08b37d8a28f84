"""Signed tokens on a receiver: the fleet's keys and revocation list, re-read when they change.

Both live in files every receiver of the fleet can read (a mounted secret, a config map, a
shared directory); the keys may instead come from an environment variable. A receiver looks
at the files at most once a second and re-reads one whose size, time or inode moved, so a key
rotation or a revocation takes effect within a second or two on every receiver, without a
restart. A file that becomes unreadable or malformed keeps its last good contents (and is
logged once): a half-written file must not open or close the fleet.

A revocation list is text, one entry a line (``#`` starts a comment): ``tbs_<id>`` revokes
one token; ``client <client id> <unix time>`` revokes every token of that client issued at or
before that time (``token revoke --client``).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.security.signed import (
    SIGNED_PREFIX,
    SignedClaims,
    key_map,
    parse_keys,
    token_id_of,
    verify,
)
from server.security.tokens import TokenRefused

_logger = logging.getLogger(__name__)

RELOAD_CHECK_S = 1.0
"""How often a receiver looks whether the keys or revocation file changed."""
CLIENT_ENTRY = "client"


@dataclass(frozen=True, slots=True)
class Revocations:
    """A parsed revocation list."""

    token_ids: frozenset[str] = frozenset()
    """Revoked token ids, without the ``tbs_`` prefix."""
    clients: Mapping[str, int] = field(default_factory=dict)
    """Client id -> a unix time: that client's tokens issued at or before it are revoked."""

    def revoked(self, claims: SignedClaims) -> bool:
        """Whether a verified token is revoked."""
        if claims.token_id in self.token_ids:
            return True
        before = self.clients.get(claims.client_id)
        return before is not None and claims.issued_at_s <= before


def parse_revocations(text: str, where: str) -> Revocations:
    """The entries of a revocation list; ValueError names ``where`` and the line."""
    ids: set[str] = set()
    clients: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(f"{CLIENT_ENTRY} "):
            client_id, _, at = line[len(CLIENT_ENTRY) + 1 :].strip().rpartition(" ")
            if not client_id or not at.isdigit():
                raise ValueError(f"{where} line {number}: expected 'client <client id> <time>'")
            clients[client_id] = max(clients.get(client_id, 0), int(at))
            continue
        token_id = token_id_of(line)
        if token_id is None:
            raise ValueError(
                f"{where} line {number}: expected '{SIGNED_PREFIX}<id>' or"
                " 'client <client id> <time>'"
            )
        ids.add(token_id)
    return Revocations(frozenset(ids), clients)


class _Watched:
    """A text file, re-read when its inode, size or modification time changes."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._signature: tuple[int, int, int] | None = None
        self._failed: str | None = None

    def read(self) -> str:
        """The file's text (raises ValueError naming the file, never its contents)."""
        try:
            st = self.path.stat()
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"{self.what} {self.path}: cannot read: {reason}") from None
        self._signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        return text

    def changed(self) -> bool:
        """Whether the file looks different from when it was last read."""
        try:
            st = self.path.stat()
        except OSError:
            return True  # reported by the read that follows
        return (st.st_ino, st.st_size, st.st_mtime_ns) != self._signature

    def failed(self, reason: str) -> None:
        """Logs, once per distinct problem, that the last good contents are kept."""
        if reason != self._failed:
            _logger.warning("%s; keeping what was read before", reason)
        self._failed = reason

    def recovered(self) -> None:
        """Notes that the file reads well again."""
        if self._failed is not None:
            _logger.info("%s %s reads well again", self.what, self.path)
        self._failed = None


class FleetTokens:
    """Verifies signed tokens with the fleet's keys, honouring its revocation list.

    Args:
        keys_file: A file of keys (``<key id> <secret>`` lines), or "".
        keys_text: The keys themselves (from the environment), when there is no file.
        revocations_file: The fleet's revocation list, or "" for none.
        clock: Monotonic clock (seconds), for the reload checks.

    Raises:
        ValueError: A file cannot be read, or holds no valid key (one line, no secret).
    """

    def __init__(
        self,
        keys_file: str,
        keys_text: str = "",
        revocations_file: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bool(keys_file) == bool(keys_text):
            raise ValueError("give the token keys as a file or as text, exactly one of them")
        self._clock = clock
        self._keys_file = _Watched(Path(keys_file), "token keys file") if keys_file else None
        self._revocations_file = (
            _Watched(Path(revocations_file), "token revocation list") if revocations_file else None
        )
        where = "token keys" if self._keys_file is None else f"token keys file {keys_file}"
        text = keys_text if self._keys_file is None else self._keys_file.read()
        self._keys = key_map(parse_keys(text, where))
        if self._keys_file is not None:
            _warn_if_shared(self._keys_file.path)
        self._revocations = Revocations()
        if self._revocations_file is not None:
            watched = self._revocations_file
            self._revocations = parse_revocations(watched.read(), f"{watched.what} {watched.path}")
        self._next_check = clock() + RELOAD_CHECK_S

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of the keys this receiver verifies with (never the keys)."""
        return tuple(self._keys)

    def verify(self, token: str) -> str:
        """The client id of a valid, unrevoked signed token; raises TokenRefused."""
        self._refresh()
        claims = verify(token, self._keys)
        if self._revocations.revoked(claims):
            raise TokenRefused(f"client token {claims.shown_id} was revoked")
        return claims.client_id

    def _refresh(self) -> None:
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + RELOAD_CHECK_S
        keys, revocations = self._keys_file, self._revocations_file
        if keys is not None and keys.changed():
            try:
                self._keys = key_map(parse_keys(keys.read(), f"{keys.what} {keys.path}"))
            except ValueError as exc:
                keys.failed(str(exc))
            else:
                keys.recovered()
                _logger.info("token keys re-read: verifying with %s", ", ".join(self._keys))
        if revocations is not None and revocations.changed():
            try:
                where = f"{revocations.what} {revocations.path}"
                self._revocations = parse_revocations(revocations.read(), where)
            except ValueError as exc:
                revocations.failed(str(exc))
            else:
                revocations.recovered()
                _logger.info(
                    "token revocation list re-read: %d tokens, %d clients revoked",
                    len(self._revocations.token_ids),
                    len(self._revocations.clients),
                )


def _warn_if_shared(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _logger.warning(
            "token keys file %s is readable by others (mode %o): anyone who reads it can make"
            " tokens; chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )


def append_revocation(path: Path, line: str) -> None:
    """Adds one entry to a revocation list, replacing the file atomically (receivers never
    see half of it); creates it (mode 0644: it holds no secret) when missing."""
    try:
        old = path.read_text(encoding="utf-8")
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        old, mode = "# trackbridge token revocation list (trackbridge token revoke)\n", 0o644
    text = old if not old or old.endswith("\n") else old + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{text}{line}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
