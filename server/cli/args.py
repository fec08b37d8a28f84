"""How every ``trackbridge`` subcommand reads its flags and reports a bad invocation.

A bad invocation is one line on stderr that names the problem and the fix, exit status 2, and
never a traceback: argparse's own errors (through :class:`Parser`), flag values checked by the
``type=`` functions here, and :class:`UsageError` raised by a command once it has looked at
the world (a data directory that is a file, a port in use). The checks here import nothing
heavy, so that ``serve`` rejects a bad value before it loads gRPC or MLflow.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

USAGE_EXIT = 2
"""Exit status of a bad invocation (as argparse's own)."""


class UsageError(Exception):
    """A command cannot run as invoked; the message names the problem and the fix."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``trackbridge CMD: PROBLEM (see --help)``."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(USAGE_EXIT)


def fail(command: str, message: str) -> int:
    """Prints a one-line usage error for ``trackbridge command``; returns the exit status."""
    print(f"trackbridge {command}: {message}", file=sys.stderr, flush=True)
    return USAGE_EXIT


def positive_float(text: str) -> float:
    """A flag value in seconds (or any quantity) that must be more than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def aggregate_pattern(text: str) -> str:
    """A metric-key glob for ``--aggregate`` (``eval/*``)."""
    if not text or text != text.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a metric glob: give one such as 'eval/*' (fnmatch syntax)"
        )
    return text


def positive_int(text: str) -> int:
    """A count that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """A count or limit where 0 means none."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A rate or pause where 0 means none."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def check_host_port(text: str, *, allow_zero: bool = True) -> str:
    """Returns ``text`` if it is ``host:port`` with a port in range, else raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:50551)")
    if not (0 if allow_zero else 1) <= int(port) <= 65535:
        raise ValueError(f"port {port} of {text!r} is out of range (1-65535, or 0 for any)")
    return text


def host_port(text: str) -> str:
    """A ``HOST:PORT`` flag value (port 0: pick a free one)."""
    try:
        return check_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def dial_address(text: str) -> str:
    """A ``HOST:PORT`` to connect to (a list ``a:p,b:p`` is allowed; port 0 is not)."""
    try:
        for part in text.split(","):
            check_host_port(part.strip().removeprefix("dns:///"), allow_zero=False)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def http_listen(text: str) -> str:
    """``HOST:PORT`` or ``off``."""
    return text if text == "off" else host_port(text)


def check_readable(path: str | None, flag: str) -> None:
    """Fails in one line when a file named by ``flag`` (a certificate, a CA bundle) cannot be
    read. Checked when the command runs, not when flags are parsed: deployment files name
    paths that exist only inside their container."""
    if path is None:
        return
    if not Path(path).is_file():
        raise UsageError(f"{flag}: no file at {path}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{flag}: cannot read {path}")


def check_free(host: str, port: int, flag: str) -> None:
    """Fails in one line when nothing can listen on ``host:port`` (in use, not an address of
    this machine). Port 0 is always free. The receiver binds for real later; this is so that
    the common mistake is told in one line before it loads anything."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            # As the servers bind: a port whose old connections linger in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise UsageError(
            f"cannot listen on {host}:{port} ({reason}): is another receiver (or anything)"
            f" there? pass {flag} HOST:PORT (port 0 picks a free one)"
        ) from None


def existing_data_dir(path: Path, *, flag: str = "--data-dir") -> Path:
    """A receiver data directory that must already exist (commands that read it)."""
    if not path.exists():
        raise UsageError(
            f"no data directory at {path}: pass the {flag} the receiver was started with"
            f" (trackbridge serve --data-dir DIR creates it, or mkdir -p {path} first)"
        )
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory: pass the receiver's {flag}")
    return path


def writable_data_dir(
    path: Path, *, what: str = "data directory", flag: str = "--data-dir"
) -> Path:
    """Creates a receiver data directory (or ``what`` another, given with ``flag``) if needed
    and proves that files can be written in it.

    Root may write to a directory whatever its mode bits say, so this writes a file rather
    than asking ``os.access``: a read-only mount, ``/proc`` or a full disk fail here, in one
    line, instead of deep inside SQLite.
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file: pass {flag} a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = "a directory on a writable local filesystem"
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            hint = "a directory this user may write to, on a writable filesystem"
        raise UsageError(
            f"cannot write in {what} {path} ({reason.lower()}): pass {flag} {hint}"
        ) from None
    return path
