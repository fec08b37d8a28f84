"""Secrets on both sides: read from files, and kept out of reprs, messages and logs."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

REDACTED = "***"

# scheme://user:password@host -> scheme://user:***@host (anything up to the last '@' of the
# authority is userinfo; a password may itself contain ':' or '@').
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s]*@")
_MIN_SECRET_CHARS = 4


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given secret, and every password inside a URI, replaced by ``***``.

    Secrets shorter than four characters are not searched for: replacing them would mangle
    ordinary words while hiding nothing worth hiding.
    """
    for secret in sorted(
        (s for s in secrets if len(s) >= _MIN_SECRET_CHARS), key=len, reverse=True
    ):
        text = text.replace(secret, REDACTED)
    return _URI_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)


def redacted_repr(obj: object) -> str:
    """A dataclass's repr in which fields declared ``repr=False`` show as ``***`` when set, and
    URIs lose their passwords; for configs, so that a config dump never shows a secret."""
    parts = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if not f.repr:
            shown = repr(REDACTED) if value else repr(value)
        elif isinstance(value, str):
            shown = repr(redact_text(value))
        else:
            shown = repr(value)
        parts.append(f"{f.name}={shown}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def read_secret_file(what: str, path: str) -> str:
    """The secret in a file, surrounding whitespace stripped; errors name the file, never its
    contents. ``what`` names the setting (e.g. the environment variable) for the message."""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"{what}: cannot read {path}: {reason}") from None
