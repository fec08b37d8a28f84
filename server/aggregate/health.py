"""Per-round health of a federation, read from the aggregates' durable state (so a restarted
receiver and ``trackbridge status`` see the same): for each round, which sites reported and
which are missing, how late each was against the first, and the spread of each aggregated
metric across the sites (min, max, mean).

The sites of a job are the clients that reported a round of an aggregated metric, less those
whose runs failed or were killed. A round's lateness is measured from the first point of the
round to each site's first point of it; a missing site has been missing since that first point.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from server.queue import aggregates as table

ROUNDS_SHOWN = 5
"""Rounds of a job reported, the latest first."""


@dataclass(frozen=True, slots=True)
class RoundHealth:
    """One round of one job."""

    job: str
    round: int
    sites: tuple[str, ...]
    """Every site of the job (see the module docstring)."""
    reported: dict[str, float]
    """Site -> seconds after the round's first point that its first point came."""
    late: tuple[str, ...]
    """Sites whose point came after the round's aggregate was written."""
    missing_for_s: float
    """Seconds since the round's first point (what a missing site is behind by)."""
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    """Metric key -> ``min``, ``max``, ``mean`` of the sites' values."""

    @property
    def missing(self) -> tuple[str, ...]:
        """Sites that have not reported the round."""
        return tuple(s for s in self.sites if s not in self.reported)

    def line(self) -> str:
        """``round 7: 4 of 5 sites, site-3 missing for 40 s`` (and the slowest, when late)."""
        text = f"round {self.round}: {len(self.reported)} of {len(self.sites)} sites"
        if self.missing:
            text += f", {', '.join(self.missing)} missing for {self.missing_for_s:.0f} s"
        slowest = max(self.reported.items(), key=lambda kv: (kv[1], kv[0]), default=None)
        if slowest is not None and slowest[1] >= 1.0:
            text += f"; slowest {slowest[0]} +{slowest[1]:.0f} s"
        if self.late:
            text += f"; after the deadline: {', '.join(self.late)}"
        return text

    def as_json(self) -> dict[str, Any]:
        """The round as the page and ``status --json`` show it."""
        return {
            "round": self.round,
            "sites": len(self.sites),
            "reported": dict(sorted(self.reported.items())),
            "missing": list(self.missing),
            "missing_for_s": round(self.missing_for_s, 1),
            "late": list(self.late),
            "spread": self.spread,
            "line": self.line(),
        }


def job_rounds(
    conn: sqlite3.Connection, job: str, now_ms: int, limit: int = ROUNDS_SHOWN
) -> list[RoundHealth]:
    """The latest ``limit`` rounds of ``job``, the latest first ([] when none)."""
    rows = conn.execute(
        "SELECT slot, key, client_id, arrived_ms, late, value FROM agg_arrivals"
        " WHERE job = ? AND by_round = 1 AND slot IN (SELECT DISTINCT slot FROM agg_arrivals"
        " WHERE job = ? AND by_round = 1 ORDER BY slot DESC LIMIT ?)",
        (job, job, limit),
    ).fetchall()
    if not rows:
        return []
    gone = table.failed_clients(conn, job)
    everyone = conn.execute(
        "SELECT DISTINCT client_id FROM agg_arrivals WHERE job = ? AND by_round = 1", (job,)
    ).fetchall()
    sites = tuple(sorted(c for (c,) in everyone if c not in gone))
    by_round: dict[int, list[tuple[str, str, int, int, float | None]]] = {}
    for slot, key, client, arrived_ms, late, value in rows:
        by_round.setdefault(int(slot), []).append((key, client, int(arrived_ms), late, value))
    out = []
    for number in sorted(by_round, reverse=True):
        points = by_round[number]
        first = min(p[2] for p in points)
        reported: dict[str, float] = {}
        values: dict[str, list[float]] = {}
        for key, client, arrived_ms, _, value in points:
            lateness = (arrived_ms - first) / 1000
            reported[client] = min(reported.get(client, lateness), lateness)
            if value is not None:
                values.setdefault(key, []).append(float(value))
        late = tuple(sorted({p[1] for p in points if p[3]}))
        spread = {
            key: {"min": min(v), "max": max(v), "mean": sum(v) / len(v)}
            for key, v in sorted(values.items())
        }
        missing_for = max(0.0, (now_ms - first) / 1000)
        out.append(RoundHealth(job, number, sites, reported, late, missing_for, spread))
    return out


def all_rounds(conn: sqlite3.Connection, now_ms: int) -> dict[str, list[RoundHealth]]:
    """Every job's latest rounds ({} when nothing is aggregated by round, or the queue is
    older than the aggregates' tables)."""
    try:
        jobs = conn.execute("SELECT DISTINCT job FROM agg_arrivals WHERE by_round = 1").fetchall()
    except sqlite3.OperationalError:  # no such table: nothing aggregated yet
        return {}
    return {job: job_rounds(conn, job, now_ms) for (job,) in sorted(jobs)}
