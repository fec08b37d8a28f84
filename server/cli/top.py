"""``trackbridge top``: a terminal view of a receiver's clients, refreshed as updates arrive.

Plain ANSI (no curses, no extra package): each frame clears the screen and draws a header
and one row per client — state, event rate, seconds since it was last heard (lag), events
not yet in MLflow, events unacknowledged on the client, dead letters, latest values.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TextIO

from bridge.channel import ChannelSecurity
from bridge.pb.v1 import watch_pb2
from server.cli.watch_client import VIEWER_FIX, ViewerError, watch

_RESET = "\x1b[0m"
_STATE_COLORS = {
    "connected": "\x1b[32m",
    "disconnected": "\x1b[1;31m",
    "failed": "\x1b[31m",
    "killed": "\x1b[31m",
    "finished": "\x1b[2m",
}
_CLEAR = "\x1b[H\x1b[2J"


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.5g}"


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 10_000_000 else str(n)


def state_counts(clients: Sequence[watch_pb2.ClientState]) -> str:
    """``5 clients: 3 connected, 2 finished`` (every state present, connected first)."""
    counts = Counter(c.state for c in clients)
    order = sorted(counts, key=lambda s: (s != "connected", s))
    parts = ", ".join(f"{counts[s]} {s}" for s in order)
    noun = "client" if len(clients) == 1 else "clients"
    return f"{len(clients)} {noun}: {parts}" if parts else "no clients yet"


def _wrap(parts: Sequence[str], width: int) -> list[str]:
    """Joins ``parts`` with `` · ``, starting a new line rather than cutting one."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += f" · {part}"
        else:
            lines.append(part[:width])
    return lines


def _lag(update: watch_pb2.WatchUpdate, c: watch_pb2.ClientState) -> str:
    if not c.last_seen_ms:
        return "-"
    return f"{max(0.0, (update.time_ms - c.last_seen_ms) / 1000):.0f}s"


# (title, width, cell) in the order drawn; dropped from the end of _DROP_ORDER when narrow.
_Cell = Callable[[watch_pb2.WatchUpdate, watch_pb2.ClientState], str]
_COLUMNS: tuple[tuple[str, int, _Cell], ...] = (
    ("EV/S", 8, lambda u, c: f"{c.events_per_s:.1f}"),
    ("LAG", 6, _lag),
    ("RECEIVED", 9, lambda u, c: _count(c.events_received)),
    ("BACKLOG", 8, lambda u, c: _count(c.backlog_events)),
    ("UNACKED", 8, lambda u, c: _count(c.client_pending_events)),
    ("DEAD", 5, lambda u, c: str(c.dead_letters)),
)
_DROP_ORDER = ("RECEIVED", "UNACKED", "EV/S", "DEAD", "LAG", "BACKLOG")
_MIN_LATEST = 24
"""Columns are dropped until the latest values have at least this many characters."""
_STATE_W = 12


def render(
    update: watch_pb2.WatchUpdate,
    *,
    receiver: str,
    job: str,
    width: int,
    height: int,
    color: bool,
) -> list[str]:
    """One frame: a header and a row per client, fitted to ``width`` x ``height``.

    The header wraps rather than being cut; on a narrow terminal the least telling columns
    go first, so that the latest values always keep room.
    """
    r = update.receiver
    clients = sorted(update.clients, key=lambda c: (c.job, c.client_id))
    mlflow = "MLflow reachable" if r.mlflow_reachable else "MLflow UNREACHABLE"
    when = time.strftime("%H:%M:%S", time.localtime(update.time_ms / 1000))
    scope = f"job {job}" if job else "all jobs"
    backlog = sum(c.backlog_events for c in clients) if job else r.backlog_events
    lines = _wrap(
        [
            "trackbridge top",
            receiver,
            scope,
            when,
            state_counts(clients),
            mlflow,
            f"{backlog} events not yet in MLflow",
        ],
        width,
    )
    lines.extend(line[:width] for line in r.round_lines)
    lines.append("")
    name_w = max([len("CLIENT"), *(len(c.client_id) for c in clients)])
    job_w = max([len("JOB"), *(len(c.job) for c in clients)]) if not job else 0
    lead = (job_w + 2 if job_w else 0) + name_w + 2 + _STATE_W
    columns = list(_COLUMNS)
    for title in _DROP_ORDER:
        if lead + sum(w + 1 for _, w, _ in columns) + 2 + _MIN_LATEST <= width:
            break
        columns = [col for col in columns if col[0] != title]
    head = f"{'JOB':<{job_w}}  " if job_w else ""
    titles = "".join(f" {t:>{w}}" for t, w, _ in columns)
    lines.append(f"{head}{'CLIENT':<{name_w}}  {'STATE':<{_STATE_W}}{titles}  LATEST"[:width])
    room = max(1, height - len(lines) - 1)
    for c in clients[:room]:
        latest = "  ".join(f"{m.key}={_value(m.value)}" for m in c.latest)
        prefix = f"{c.job:<{job_w}}  " if job_w else ""
        cells = "".join(f" {cell(update, c):>{w}}" for _, w, cell in columns)
        row = f"{prefix}{c.client_id:<{name_w}}  {c.state:<{_STATE_W}}{cells}  {latest}"[:width]
        at = len(prefix) + name_w + 2
        if color and at < len(row):
            tint = _STATE_COLORS.get(c.state, "")
            end = at + _STATE_W
            row = f"{row[:at]}{tint}{row[at:end]}{_RESET}{row[end:]}"
        lines.append(row)
    if len(clients) > room:
        lines.append(f"… {len(clients) - room} more clients (enlarge the terminal)"[:width])
    return lines


class _Enough(Exception):
    """The frames asked for were drawn."""


def run_top(
    receiver: str,
    *,
    job: str,
    security: ChannelSecurity,
    iterations: int | None,
    out: TextIO = sys.stdout,
) -> int:
    """Draws frames until interrupted, or until ``iterations`` frames were drawn (a frame that
    says the receiver is unreachable counts); returns an exit code (2: the last frame could
    not reach the receiver, or it refused the viewer)."""
    tty = out.isatty()
    if tty:
        out.write("\x1b[?1049h\x1b[?25l")  # alternate screen, no cursor
    frames = 0
    trouble_text = ""

    def counted() -> None:
        nonlocal frames
        frames += 1
        if iterations is not None and frames >= iterations:
            raise _Enough

    def trouble(message: str) -> None:
        nonlocal trouble_text
        trouble_text = message
        if tty:
            out.write(f"{_CLEAR}trackbridge top · {message}\n")
            out.flush()
        elif iterations is None or frames + 1 < iterations:
            print(f"trackbridge top: {message}", file=sys.stderr, flush=True)
        counted()

    try:
        for update in watch(receiver, job=job, security=security, on_trouble=trouble):
            if not update.HasField("receiver"):
                continue  # no states in this update
            trouble_text = ""
            size = shutil.get_terminal_size((160, 50))
            frame = render(
                update,
                receiver=receiver,
                job=job,
                width=size.columns,
                height=size.lines,
                color=tty,
            )
            out.write((_CLEAR if tty else "") + "\n".join(frame) + "\n")
            out.flush()
            counted()
    except _Enough:
        pass
    except ViewerError as exc:
        print(f"trackbridge top: {exc}: {VIEWER_FIX}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            out.write("\x1b[?25h\x1b[?1049l")
            out.flush()
    if trouble_text:
        reason = trouble_text.removesuffix("; retrying")
        print(
            f"trackbridge top: {reason}: start the receiver or pass --receiver HOST:PORT",
            file=sys.stderr,
        )
        return 2
    return 0
