"""``trackbridge tail``: prints a client's (or a job's) events as the receiver accepts them."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from bridge.channel import ChannelSecurity
from bridge.pb.v1 import events_pb2, watch_pb2
from server.cli.watch_client import VIEWER_FIX, ViewerError, watch


def _when(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def describe(event: events_pb2.Event) -> str:
    """One event in words: ``metric loss=0.25 step=3``, ``param lr=0.1``, ``run_end FINISHED``."""
    kind = event.WhichOneof("kind")
    if kind == "metric":
        m = event.metric
        return f"metric {m.key}={m.value!r} step={m.step} at {_when(m.timestamp_ms)}"
    if kind in ("param", "tag"):
        item = event.param if kind == "param" else event.tag
        return f"{kind} {item.key}={item.value!r}"
    if kind == "run_start":
        name = event.run_start.run_name or "(client id)"
        return f"run_start name={name}" + (
            f" parent={event.run_start.parent_run_key}" if event.run_start.parent_run_key else ""
        )
    if kind == "run_end":
        return f"run_end {events_pb2.RunStatus.Name(event.run_end.status)}"
    if kind is None:
        return "(empty event)"
    return f"{kind} {getattr(event, kind)}".replace("\n", " ").strip()


def describe_scope(job: str, client_id: str) -> str:
    """``client 'site-2' of job 'mnist'``, ``every client of job 'mnist'``, ..."""
    who = f"client {client_id!r}" if client_id else "every client"
    return f"{who} of job {job!r}" if job else f"{who} of every job"


def run_tail(
    receiver: str,
    *,
    job: str,
    client_id: str,
    security: ChannelSecurity,
    count: int | None,
    out: TextIO = sys.stdout,
) -> int:
    """Prints events until interrupted (or ``count`` were printed); returns an exit code."""
    printed = 0
    told = False
    what = describe_scope(job, client_id)

    def trouble(message: str) -> None:
        print(f"trackbridge tail: {message}", file=sys.stderr, flush=True)

    def tell(update: watch_pb2.WatchUpdate) -> None:
        # Once, on the first answer: what this waits for, and whether anything matches yet.
        nonlocal told
        if told or not update.HasField("receiver"):
            return
        told = True
        known = "" if update.clients else " (none has sent anything to this receiver yet)"
        print(
            f"trackbridge tail: waiting for events of {what} at {receiver}{known} (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )

    try:
        for update in watch(
            receiver,
            job=job,
            client_id=client_id,
            include_events=True,
            security=security,
            on_trouble=trouble,
        ):
            tell(update)
            if update.events_dropped:
                out.write(f"… {update.events_dropped} events skipped (reading too slowly)\n")
            for batch in update.batches:
                for offset, event in enumerate(batch.events):
                    out.write(
                        f"{batch.job}/{batch.client_id} run {batch.run_key[:8]}"
                        f" #{batch.first_seq + offset} {describe(event)}\n"
                    )
                    printed += 1
                    if count is not None and printed >= count:
                        out.flush()
                        return 0
            out.flush()
    except ViewerError as exc:
        print(f"trackbridge tail: {exc}: {VIEWER_FIX}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
