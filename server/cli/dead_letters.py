"""``trackbridge dead-letters list|replay``: what MLflow refused, and sending it again.

Works on the data directory, whether its receiver runs (it picks replayed events up at its next
flush) or is stopped (they go at its next start). Each problem is one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from server.config import DEFAULT_DATA_DIR, ReceiverConfig
from server.queue.dead_letters import list_dead_letters, replay
from server.queue.schema import QUEUE_FILE, QueueCorrupt, connect, open_read_only

_PROG = "trackbridge dead-letters"


def add_dead_letters_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers ``dead-letters list`` and ``dead-letters replay``."""
    p = sub.add_parser("dead-letters", help="list what MLflow refused, and replay it once fixed")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="quarantined runs and refused entries, by run")
    replaying = actions.add_parser(
        "replay", help="queue dead letters again (after the cause is fixed in MLflow)"
    )
    for q in (listing, replaying):
        q.add_argument(
            "--data-dir", help=f"the receiver's data directory (default ./{DEFAULT_DATA_DIR})"
        )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    replaying.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="RUN_KEY",
        help="a run, by its key as status shows it: CLIENT/RUN_KEY (repeatable)",
    )
    replaying.add_argument("--reason", metavar="TEXT", help="those whose reason contains TEXT")
    replaying.add_argument("--all", action="store_true", help="every dead letter")
    replaying.add_argument(
        "--new-run",
        action="store_true",
        help="forget the released runs' MLflow runs: write to a run found by its tags, or a new"
        " one (for a run deleted from MLflow for good)",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    data_dir = ReceiverConfig.resolve(data_dir=args.data_dir).data_dir
    try:
        if args.action == "list":
            return _list(data_dir, args.json)
        return _replay(data_dir, args)
    except (FileNotFoundError, QueueCorrupt, sqlite3.Error, _Refused) as exc:
        print(f"{_PROG} {args.action}: {exc}", file=sys.stderr)
        return 2


class _Refused(Exception):
    pass


def _list(data_dir: Path, as_json: bool) -> int:
    conn = open_read_only(data_dir / QUEUE_FILE)
    try:
        listed = list_dead_letters(conn)
    except sqlite3.DatabaseError as exc:
        raise QueueCorrupt(data_dir / QUEUE_FILE, exc) from None
    finally:
        conn.close()
    print(json.dumps(listed, indent=2) if as_json else format_listing(listed))
    return 0


def format_listing(listed: dict[str, Any]) -> str:
    """Dead letters for people, by run and reason."""
    runs, entries = listed["quarantined_runs"], listed["entries"]
    lines = [f"quarantined runs: {len(runs)}"]
    for q in runs:
        lines.append(
            f"  run {q['run_key']} (job {q['job']}, client {q['client_id']}): {q['events']}"
            f" events in {q['batches']} batches held since {_when(q['since_ms'])}"
        )
        lines.append(f"    {q['reason']}")
    lines.append(f"refused entries: {len(entries)}")
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in entries:
        grouped.setdefault((e["run_key"], e["reason"]), []).append(e)
    for (run_key, reason), group in grouped.items():
        names = ", ".join(f"{e['kind']} {e['key']!r}" for e in group[:5])
        more = f" and {len(group) - 5} more" if len(group) > 5 else ""
        note = "" if all(e["replayable"] for e in group) else " (kept by an older receiver:"
        note += " not replayable)" if note else ""
        lines.append(f"  run {run_key}: {names}{more}{note}")
        lines.append(f"    {reason}")
    if runs or entries:
        lines.append(
            "replay once the cause is fixed: trackbridge dead-letters replay --run RUN_KEY"
            " (or --reason TEXT, or --all)"
        )
    return "\n".join(lines)


def _replay(data_dir: Path, args: argparse.Namespace) -> int:
    if not (args.run or args.reason or args.all):
        raise _Refused("name what to replay: --run RUN_KEY, --reason TEXT, or --all")
    if args.all and (args.run or args.reason):
        raise _Refused("--all replays everything: give it alone, or name runs or a reason")
    path = data_dir / QUEUE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no receiver queue at {path}")
    conn = connect(path)
    try:
        listed = list_dead_letters(conn)
        known = {q["run_key"] for q in listed["quarantined_runs"]}
        known |= {e["run_key"] for e in listed["entries"] if e["replayable"]}
        unknown = [key for key in args.run if key not in known]
        if unknown:
            raise _Refused(f"no dead letters for run {', '.join(unknown)}: see `{_PROG} list`")
        done = replay(
            conn,
            run_keys=args.run,
            reason=args.reason or "",
            everything=args.all,
            new_run=args.new_run,
        )
    finally:
        conn.close()
    if not done.runs and not done.entries:
        if args.all:
            print("nothing to replay")
            return 0
        raise _Refused(f"no dead letter's reason contains {args.reason!r}: see `{_PROG} list`")
    for run_key in done.runs:
        print(f"released run {run_key}: its held events go to MLflow again")
    if done.entries:
        print(f"queued {done.entries} refused entries again")
    print(
        f"{done.held_events + done.entries} events queued; a running receiver writes them at its"
        " next flush, a stopped one when it starts"
    )
    return 0


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "?"
