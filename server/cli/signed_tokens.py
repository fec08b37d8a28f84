"""``trackbridge token`` for signed tokens: ``keygen``, ``issue --signed`` and revoking them.

Keys and tokens travel through files and the environment only (never a flag: flags show in
``ps``); what is printed to stdout is the one thing asked for (a token, or a key line when no
file is given), everything else goes to stderr without a secret.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from bridge import envvars
from server.security.fleet import CLIENT_ENTRY, append_revocation
from server.security.signed import new_key_line, parse_keys, sign, token_id_of

DEFAULT_EXPIRES = "90d"
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


class _Usage(Exception):
    """A bad invocation: one line naming the problem and the fix."""


def add_signed_arguments(
    issue: argparse.ArgumentParser,
    revoke: argparse.ArgumentParser,
    keygen: argparse.ArgumentParser,
) -> None:
    """The signed-token flags of ``token issue`` and ``token revoke``, and ``token keygen``."""
    issue.add_argument(
        "--signed",
        action="store_true",
        help="a signed token, valid on every receiver holding the fleet's keys (none is stored)",
    )
    issue.add_argument(
        "--keys",
        metavar="FILE",
        help=f"the fleet's keys file (implies --signed; env {envvars.TRACKBRIDGE_TOKEN_KEYS_FILE}"
        f" or {envvars.TRACKBRIDGE_TOKEN_KEYS})",
    )
    issue.add_argument("--key-id", help="the key to sign with (default: the file's first)")
    issue.add_argument(
        "--expires-in",
        default=DEFAULT_EXPIRES,
        metavar="DURATION",
        help=f"how long a signed token is valid: 3600, 45m, 12h, 30d (default {DEFAULT_EXPIRES})",
    )
    revoke.add_argument(
        "--revocations",
        metavar="FILE",
        help="the fleet's revocation list, for signed tokens (ids tbs_...) and --client (env"
        f" {envvars.TRACKBRIDGE_TOKEN_REVOCATIONS_FILE}); created when missing",
    )
    keygen.add_argument(
        "--keys",
        metavar="FILE",
        help="add the new key to this file (created owner-only when missing) as its first line,"
        " the signing key; without it the key line is printed",
    )
    keygen.add_argument("--key-id", help="the new key's id (default: k<UTC date and time>)")
    keygen.add_argument(
        "--append",
        action="store_true",
        help="add the key last (receivers verify with it; tokens are signed with it only once"
        " it is moved first or named with issue --key-id)",
    )
    keygen.set_defaults(func=keygen_command)


def is_signed_issue(args: argparse.Namespace) -> bool:
    """Whether ``token issue`` was asked for a signed token."""
    return bool(args.signed or args.keys)


def issue_signed(args: argparse.Namespace) -> int:
    """``token issue --signed``: prints a signed token; exit 2 with one line on bad input."""
    try:
        where, text = _keys_text(args.keys)
        keys = parse_keys(text, where)
        token, claims = sign(keys, args.client, _seconds(args.expires_in), key_id=args.key_id)
    except (ValueError, _Usage) as exc:
        print(f"trackbridge token issue: {exc}", file=sys.stderr)
        return 2
    print(token, flush=True)
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(claims.expires_at_s))
    print(
        f"signed token for client {args.client!r}, id {claims.shown_id}, key {claims.key_id},"
        f" expires {expires}; it is not shown again. Valid on every receiver that holds key"
        f" {claims.key_id}. Give it to that client as {envvars.TRACKBRIDGE_TOKEN} (or in a file"
        f" named by {envvars.TRACKBRIDGE_TOKEN_FILE}); revoke it with `trackbridge token revoke"
        f" {claims.shown_id} --revocations FILE`.",
        file=sys.stderr,
    )
    return 0


def keygen_command(args: argparse.Namespace) -> int:
    """``token keygen``: a new fleet key, into a keys file or printed."""
    key_id = args.key_id or time.strftime("k%Y%m%d%H%M%S", time.gmtime())
    try:
        line = new_key_line(key_id)
        if args.keys is None:
            print(line, flush=True)
            return 0
        path = Path(args.keys)
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old.strip():
            existing = parse_keys(old, f"keys file {path}")
            if any(k.key_id == key_id for k in existing):
                raise _Usage(f"keys file {path} already has a key {key_id}; pick another --key-id")
        body = old if not old or old.endswith("\n") else old + "\n"
        _write_private(path, f"{body}{line}\n" if args.append else f"{line}\n{body}")
    except (ValueError, OSError, _Usage) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"trackbridge token keygen: {reason}", file=sys.stderr)
        return 2
    role = "verifies (listed last)" if args.append else "signs from now on (listed first)"
    print(
        f"added key {key_id} to {path}: it {role}. Receivers re-read the file when it changes;"
        " hand out tokens signed with it once every receiver has it.",
        file=sys.stderr,
    )
    return 0


def revoke_signed(token_id: str, revocations: str | None) -> int:
    """``token revoke tbs_...``: adds the id to the fleet's revocation list."""
    bare = token_id_of(token_id)
    try:
        if bare is None:
            raise _Usage(f"{token_id[:40]!r} is not a signed token id (tbs_ and 12 hex digits)")
        path = _revocations_path(revocations)
        append_revocation(path, f"tbs_{bare}  # revoked {_utc_now()}")
    except (OSError, _Usage) as exc:
        print(f"trackbridge token revoke: {_reason(exc)}", file=sys.stderr)
        return 2
    print(f"revoked tbs_{bare} in {path}; receivers reading it refuse it within seconds")
    return 0


def revoke_signed_client(client_id: str, revocations: str | None) -> bool:
    """``token revoke --client`` with a revocation list: revokes every signed token of the
    client issued until now. False (and nothing written) when no list is configured."""
    if revocations is None and not os.environ.get(envvars.TRACKBRIDGE_TOKEN_REVOCATIONS_FILE):
        return False
    path = _revocations_path(revocations)
    if any(c in client_id for c in "\n\r#"):
        raise ValueError("a client id with a line break or '#' cannot be listed")
    append_revocation(path, f"{CLIENT_ENTRY} {client_id} {int(time.time())}  # {_utc_now()}")
    print(f"revoked every signed token of client {client_id!r} issued until now, in {path}")
    return True


def _revocations_path(given: str | None) -> Path:
    path = given or os.environ.get(envvars.TRACKBRIDGE_TOKEN_REVOCATIONS_FILE, "")
    if not path:
        raise _Usage(
            "signed tokens are revoked in the fleet's revocation list: give --revocations FILE"
            f" (or {envvars.TRACKBRIDGE_TOKEN_REVOCATIONS_FILE}), the file receivers read"
        )
    return Path(path)


def _keys_text(given: str | None) -> tuple[str, str]:
    path = given or os.environ.get(envvars.TRACKBRIDGE_TOKEN_KEYS_FILE, "")
    if path:
        try:
            return f"keys file {path}", Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise _Usage(f"keys file {path}: cannot read: {reason}") from None
    text = os.environ.get(envvars.TRACKBRIDGE_TOKEN_KEYS, "")
    if text:
        return envvars.TRACKBRIDGE_TOKEN_KEYS, text
    raise _Usage(
        "a signed token needs the fleet's keys: give --keys FILE (or"
        f" {envvars.TRACKBRIDGE_TOKEN_KEYS_FILE}); make one with `trackbridge token keygen"
        " --keys FILE`"
    )


def _seconds(text: str) -> float:
    match = _DURATION_RE.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise _Usage(f"--expires-in: expected a duration like 3600, 45m, 12h or 30d, got {text!r}")
    return float(match.group(1)) * _UNITS_S[match.group(2) or "s"]


def _write_private(path: Path, text: str) -> None:
    """Replaces ``path`` atomically with ``text``, readable by its owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
