"""The live page's wire format: JSON snapshots and deltas sent over Server-Sent Events.

Non-finite values are sent as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (JSON
has no such numbers; JavaScript's ``Number()`` reads the strings back).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from server.live.hub import Hub
from server.live.model import ClientRow, Delta
from server.live.series import Point


def _num(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _point(point: Point) -> list[float | str]:
    step, value, timestamp_ms = point
    return [step, _num(value), timestamp_ms]


def _points(points: Iterable[Point]) -> dict[str, list[Any]]:
    steps: list[int] = []
    values: list[float | str] = []
    times: list[int] = []
    for step, value, timestamp_ms in points:
        steps.append(step)
        values.append(_num(value))
        times.append(timestamp_ms)
    return {"s": steps, "v": values, "t": times}


def row(r: ClientRow, *, latest: bool = True) -> dict[str, Any]:
    """One client's row as the page reads it (deltas carry latest values on their own)."""
    out = {
        "id": r.client_id,
        "run_key": r.run_key,
        "connected": r.connected,
        "state": r.state,
        "last_seen_ms": r.last_seen_ms,
        "rate": round(r.events_per_s, 2),
        "received": r.events_received,
        "acked": r.events_acked,
        "flushed": r.events_flushed,
        "dead": r.dead_letters,
        "backlog": r.backlog_events,
        "client_pending": r.client_pending_events,
        "client_spool_bytes": r.client_spool_bytes,
        "mlflow_run_id": r.mlflow_run_id,
        "mlflow_url": r.mlflow_run_url,
    }
    if latest:
        out["latest"] = {k: _point(p) for k, p in r.latest.items()}
    return out


def _dumps(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def jobs(hub: Hub) -> str:
    """The job list: ``[{"job", "clients", "connected"}]``."""
    return _dumps(
        {
            "jobs": [
                {"job": job, "clients": total, "connected": connected}
                for job, (total, connected) in hub.jobs().items()
            ]
        }
    )


def snapshot(
    hub: Hub, job: str, metrics: frozenset[str] | None, receiver: Mapping[str, Any]
) -> str:
    """Everything the page shows for a job: client rows and the kept points of ``metrics``."""
    series = hub.series(job, metrics)
    envelopes = hub.envelopes(job, metrics)
    points: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for client, per_key in series.items():
        shown = points[client] = {}
        for key, kept in per_key.items():
            shown[key] = _points(kept)
            envelope = envelopes[client].get(key)
            if envelope is not None:  # thinned: each point's bucket's lowest and highest value
                shown[key]["lo"] = [_num(v) for v in envelope[0]]
                shown[key]["hi"] = [_num(v) for v in envelope[1]]
    return _dumps(
        {
            "type": "snapshot",
            "job": job,
            "now_ms": time.time_ns() // 1_000_000,
            "receiver": receiver,
            "clients": [row(r) for r in hub.rows(job)],
            "points": points,
        }
    )


def delta(
    deltas: Iterable[Delta], metrics: frozenset[str] | None, receiver: Mapping[str, Any]
) -> str | None:
    """Merges queued deltas of one job into one message; None when nothing is in them."""
    merged: dict[str, dict[str, list[Point]]] = {}
    rows: tuple[ClientRow, ...] | None = None
    for d in deltas:
        rows = d.clients if d.clients is not None else rows
        for client, per_key in d.points.items():
            target = merged.setdefault(client, {})
            for key, points in per_key.items():
                if points:
                    target.setdefault(key, []).extend(points)
    if rows is None and not any(merged.values()):
        return None
    message: dict[str, Any] = {
        "type": "delta",
        "now_ms": time.time_ns() // 1_000_000,
        "latest": {
            client: {key: _point(points[-1]) for key, points in per_key.items()}
            for client, per_key in merged.items()
            if per_key
        },
        "points": {
            client: {
                key: _points(points)
                for key, points in per_key.items()
                if metrics is None or key in metrics
            }
            for client, per_key in merged.items()
        },
    }
    if rows is not None:
        message["clients"] = [row(r, latest=False) for r in rows]
        message["receiver"] = receiver
    return _dumps(message)


def chart_csv(hub: Hub, job: str, key: str) -> str:
    """What the chart of ``key`` draws, as CSV: a row per kept point of each client (each point
    with the lowest and highest value of the points it stands for)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["client", "step", "value", "min", "max", "timestamp_ms"])
    wanted = frozenset([key])
    envelopes = hub.envelopes(job, wanted)
    for client, per_key in hub.series(job, wanted).items():
        for points in per_key.values():
            lows, highs = envelopes[client].get(
                key, ([p[1] for p in points], [p[1] for p in points])
            )
            for (step, value, timestamp_ms), low, high in zip(points, lows, highs, strict=True):
                writer.writerow([client, step, repr(value), repr(low), repr(high), timestamp_ms])
    return out.getvalue()
