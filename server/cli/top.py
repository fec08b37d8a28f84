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
from typing import TextIO

from bridge.channel import ChannelSecurity
from bridge.pb.v1 import watch_pb2
from server.cli.watch_client import ViewerError, watch

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


def render(
    update: watch_pb2.WatchUpdate,
    *,
    receiver: str,
    job: str,
    width: int,
    height: int,
    color: bool,
) -> list[str]:
    """One frame: a header and a row per client, cut to ``width`` x ``height``."""
    r = update.receiver
    clients = sorted(update.clients, key=lambda c: (c.job, c.client_id))
    connected = sum(c.connected for c in clients)
    mlflow = "MLflow reachable" if r.mlflow_reachable else "MLflow UNREACHABLE"
    when = time.strftime("%H:%M:%S", time.localtime(update.time_ms / 1000))
    scope = f"job {job}" if job else "all jobs"
    lines = [
        f"trackbridge top · {receiver} · {scope} · {connected}/{len(clients)} clients connected"
        f" · {mlflow} · {r.backlog_events} events not yet in MLflow · {when}",
        "",
    ]
    name_w = max([len("CLIENT"), *(len(c.client_id) for c in clients)])
    job_w = max([len("JOB"), *(len(c.job) for c in clients)]) if not job else 0
    head = f"{'JOB':<{job_w}}  " if job_w else ""
    lines.append(
        f"{head}{'CLIENT':<{name_w}}  {'STATE':<12} {'EV/S':>8} {'LAG':>6} {'RECEIVED':>9}"
        f" {'BACKLOG':>8} {'UNACKED':>8} {'DEAD':>5}  LATEST"
    )
    room = max(1, height - len(lines) - 1)
    for c in clients[:room]:
        lag = (
            f"{max(0.0, (update.time_ms - c.last_seen_ms) / 1000):.0f}s" if c.last_seen_ms else "-"
        )
        latest = "  ".join(f"{m.key}={_value(m.value)}" for m in c.latest)
        prefix = f"{c.job:<{job_w}}  " if job_w else ""
        row = (
            f"{prefix}{c.client_id:<{name_w}}  {c.state:<12} {c.events_per_s:>8.1f} {lag:>6}"
            f" {_count(c.events_received):>9} {_count(c.backlog_events):>8}"
            f" {_count(c.client_pending_events):>8} {c.dead_letters:>5}  {latest}"
        )[:width]
        at = len(prefix) + name_w + 2
        if color and at < len(row):
            tint = _STATE_COLORS.get(c.state, "")
            row = f"{row[:at]}{tint}{row[at : at + 12]}{_RESET}{row[at + 12 :]}"
        lines.append(row)
    if len(clients) > room:
        lines.append(f"… {len(clients) - room} more clients (enlarge the terminal)")
    return [line if "\x1b" in line else line[:width] for line in lines]


def run_top(
    receiver: str,
    *,
    job: str,
    security: ChannelSecurity,
    iterations: int | None,
    out: TextIO = sys.stdout,
) -> int:
    """Draws frames until interrupted (or ``iterations`` frames); returns an exit code."""
    tty = out.isatty()
    if tty:
        out.write("\x1b[?1049h\x1b[?25l")  # alternate screen, no cursor
    frames = 0

    def trouble(message: str) -> None:
        out.write(f"{_CLEAR if tty else ''}trackbridge top · {message}\n")
        out.flush()

    try:
        for update in watch(receiver, job=job, security=security, on_trouble=trouble):
            if not update.HasField("receiver"):
                continue  # no states in this update
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
            frames += 1
            if iterations is not None and frames >= iterations:
                break
    except ViewerError as exc:
        print(f"trackbridge top: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            out.write("\x1b[?25h\x1b[?1049l")
            out.flush()
    return 0
