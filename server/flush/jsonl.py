"""The JSON-lines sink: every event of every client run, one line each, in files on the receiver.

Layout: ``DIR/<job>/<client id>/<run key>.jsonl`` (the client's own run key), each name
percent-encoded so that no name can climb out of ``DIR`` or clash with another
(docs/how-to/jsonl-files.md documents the line format). A file starts with a header line
(``seq`` 0, kind ``run``) naming its job, client and run, then one line per event in the
client's order.

Exactly once. The flusher hands a sink a run's stored batches and records progress in the
queue after the sink returns; a receiver killed between the two hands them again. The file is
its own record of how far it got: on first opening it in a process the sink reads its last
complete line's ``seq``, cuts off a torn last line (a write cut short by a full disk or a power
loss), and skips every event at or below that number. Writes reach the operating system (one
``os.write`` per call, before the queue records progress), which survives a kill -9 of the
receiver; with ``--fsync full`` each write and each new directory is fsynced as well, which
also survives a power loss, as the queue's own policy.

Written by hand: a line is ``json.dumps`` of the event's fields; what no library does is keep
an append-only file idempotent by a sequence number.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import fcntl
import hashlib
import json
import logging
import math
import os
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import StartupError
from bridge.events import (
    DeleteTag,
    Dropped,
    Event,
    Metric,
    MlflowCall,
    Param,
    RunEnd,
    RunStart,
    Tag,
)
from server.queue.sqlite import RunRecord
from server.security.ownership import client_run_key

__all__ = ["JsonlDamaged", "JsonlInUse", "JsonlSink", "encode_line", "event_line", "safe_name"]

_logger = logging.getLogger(__name__)

LOCK_FILE = ".trackbridge-jsonl.lock"
"""Held (flock) by the receiver writing a directory: two receivers never append to one file."""
MAX_OPEN_FILES = 128
"""Files kept open at once; the others are reopened (without a rescan) when written again."""
_NAME_BYTES = 200  # under every filesystem's 255-byte name limit, with room for ".jsonl"
_TAIL_BLOCK = 64 * 1024

KINDS: Mapping[type, str] = {
    Metric: "metric",
    Param: "param",
    Tag: "tag",
    RunStart: "run_start",
    RunEnd: "run_end",
    DeleteTag: "delete_tag",
    MlflowCall: "mlflow_call",
    Dropped: "dropped",
}
"""The ``kind`` of each event's line."""


class JsonlDamaged(StartupError):
    """A run's file does not end in a line this sink wrote: it will not guess how far it got."""


class JsonlInUse(StartupError):
    """Another receiver writes to the directory."""


def safe_name(name: str) -> str:
    """A file or directory name for ``name``: percent-encoded (``/``, ``..``, NUL, spaces...),
    distinct names stay distinct, at most 200 bytes (a long one ends in a hash of itself)."""
    quoted = urllib.parse.quote(name, safe="-_") if name else "%"
    if quoted.startswith("."):  # no ".", "..", nor a hidden name beside the lock file
        quoted = "%2E" + quoted[1:]
    if len(quoted) > _NAME_BYTES:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        quoted = f"{quoted[: _NAME_BYTES - 17]}~{digest}"
    return quoted


def event_line(seq: int, event: Event) -> dict[str, Any]:
    """The JSON object of one event: ``seq``, ``kind``, then the event's fields, a field at
    its default value left out (so fields added later with a default break no reader)."""
    kind, fields = _shape(type(event))
    line: dict[str, Any] = {"seq": seq, "kind": kind}
    for name, default in fields:
        value = getattr(event, name)
        if default is not _REQUIRED and value == default:
            continue
        line[name] = _json_value(value)
    return line


_REQUIRED = object()
_SHAPES: dict[type, tuple[str, tuple[tuple[str, object], ...]]] = {}


def _shape(cls: type) -> tuple[str, tuple[tuple[str, object], ...]]:
    """An event class's kind and its fields with their defaults (read once per class)."""
    shape = _SHAPES.get(cls)
    if shape is None:
        fields = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                fields.append((f.name, f.default))
            elif f.default_factory is not dataclasses.MISSING:
                fields.append((f.name, f.default_factory()))
            else:
                fields.append((f.name, _REQUIRED))
        shape = _SHAPES[cls] = (KINDS[cls], tuple(fields))
    return shape


def _json_value(value: object) -> object:
    if type(value) in (int, str):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return dict(value)
    return value


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_STRING: Any = json.encoder.encode_basestring  # the C one the encoder itself uses


def encode_line(seq: int, event: Event) -> str:
    """``event_line`` as JSON text, the same characters ``json`` writes, built without the
    dict (the flusher writes every event through it)."""
    kind, fields = _shape(type(event))
    parts = [f'{{"seq":{seq},"kind":"{kind}"']
    for name, default in fields:
        value = getattr(event, name)
        if default is not _REQUIRED and value == default:
            continue
        kind_of = type(value)
        if kind_of is str:
            parts.append(f',"{name}":{_STRING(value)}')
        elif kind_of is int or (kind_of is float and math.isfinite(value)):
            parts.append(f',"{name}":{value!r}')
        else:
            parts.append(f',"{name}":{_ENCODER.encode(_json_value(value))}')
    parts.append("}\n")
    return "".join(parts)


@dataclass(slots=True)
class _File:
    fd: int
    last_seq: int


class JsonlSink:
    """Appends every event of each run to its file, each exactly once (see the module doc)."""

    name = "jsonl"

    def __init__(self, root: Path, *, fsync: bool = False) -> None:
        self.root = root
        self._fsync = fsync
        self._open: OrderedDict[str, _File] = OrderedDict()
        self._last_seq: dict[str, int] = {}
        """Runs whose file this process has read or written: how far it is."""
        self._lock_fd: int | None = None

    def open(self) -> None:
        """Creates the directory and takes its lock.

        Raises:
            JsonlInUse: Another receiver holds it.
            OSError: It cannot be made or written.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise JsonlInUse(
                f"another receiver writes JSON-lines files to {self.root}: give this one"
                " another --sink jsonl:DIR"
            ) from None
        self._lock_fd = fd

    def path(self, record: RunRecord) -> Path:
        """The file of a run."""
        run = safe_name(client_run_key(record.run_key))
        return self.root / safe_name(record.job) / safe_name(record.client_id) / f"{run}.jsonl"

    def written_through(self, record: RunRecord) -> int:
        """The last sequence number the run's file holds (0: none)."""
        last = self._last_seq.get(record.run_key)
        if last is None:
            last = self._file(record).last_seq
        return max(last, 0)

    def write(self, record: RunRecord, events: Sequence[tuple[int, Event]]) -> int:
        """Appends the events ``(seq, event)`` the file does not hold yet, in one write;
        returns how many. On return they survive a kill -9 (and a power loss with fsync).

        Raises:
            OSError: The write failed (the file is read again before the next one).
            JsonlDamaged: The file's last line is not one of this sink's.
        """
        f = self._file(record)
        lines: list[str] = []
        if f.last_seq < 0:
            header = {"seq": 0, "kind": "run", "job": record.job, "client_id": record.client_id,
                      "run_key": client_run_key(record.run_key)}  # fmt: skip
            lines.append(_ENCODER.encode(header) + "\n")
        last = max(f.last_seq, 0)
        count = 0
        for seq, event in events:
            if seq <= last:
                continue  # written before a restart, or handed again
            lines.append(encode_line(seq, event))
            last = seq
            count += 1
        if not lines:
            return 0
        try:
            view = memoryview("".join(lines).encode())
            while view:
                view = view[os.write(f.fd, view) :]
            if self._fsync:
                os.fsync(f.fd)
        except OSError:
            self._drop(record.run_key)  # a torn line: the next write reads the file again
            raise
        f.last_seq = self._last_seq[record.run_key] = last
        return count

    def close(self) -> None:
        """Closes every file and releases the directory."""
        for run_key in list(self._open):
            self._drop(run_key)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _drop(self, run_key: str) -> None:
        f = self._open.pop(run_key, None)
        self._last_seq.pop(run_key, None)
        if f is not None:
            os.close(f.fd)

    def _file(self, record: RunRecord) -> _File:
        f = self._open.get(record.run_key)
        if f is not None:
            self._open.move_to_end(record.run_key)
            return f
        path = self.path(record)
        known = self._last_seq.get(record.run_key)
        if known is None:
            self._make_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            last = known if known is not None else _recover(fd, path)
        except BaseException:
            os.close(fd)
            raise
        if known is None and self._fsync:
            _fsync_dir(path.parent)  # the file's name survives a power loss too
        f = self._open[record.run_key] = _File(fd, last)
        self._last_seq[record.run_key] = last
        while len(self._open) > MAX_OPEN_FILES:
            _, old = self._open.popitem(last=False)
            os.close(old.fd)  # its last_seq stays known: reopening needs no rescan
        return f

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        at = folder
        while not at.exists():
            missing.append(at)
            at = at.parent
        for made in reversed(missing):
            made.mkdir(mode=0o700, exist_ok=True)
            if self._fsync:
                _fsync_dir(made.parent)


def _recover(fd: int, path: Path) -> int:
    """How far a file got: the last complete line's seq (-1: empty); cuts a torn tail off."""
    size = os.fstat(fd).st_size
    if size == 0:
        return -1
    end, line = _last_line(fd, size)
    if end < size:
        _logger.warning(
            "%s: cutting off a torn last line (%d bytes) left by an interrupted write",
            path,
            size - end,
        )
        os.ftruncate(fd, end)
        if end == 0:
            return -1
    try:
        seq = json.loads(line)["seq"]
        if not isinstance(seq, int):
            raise TypeError(seq)
    except (ValueError, KeyError, TypeError):
        raise JsonlDamaged(
            f"{path} does not end in a line trackbridge wrote: move it away (the run's events"
            " still in the queue are written to a new file), then restart the receiver"
        ) from None
    return seq


def _last_line(fd: int, size: int) -> tuple[int, bytes]:
    """(length of the file's complete lines, the last complete line)."""
    buf = b""
    pos = size
    while True:
        start = max(0, pos - _TAIL_BLOCK)
        buf = os.pread(fd, pos - start, start) + buf
        pos = start
        newline = buf.rfind(b"\n")
        if newline < 0 and pos > 0:
            continue
        if newline < 0:
            return 0, b""
        before = buf.rfind(b"\n", 0, newline)
        if before < 0 and pos > 0:
            continue
        return pos + newline + 1, buf[before + 1 : newline]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
