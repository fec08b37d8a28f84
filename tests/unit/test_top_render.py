"""``trackbridge top``'s frame fits the terminal: at 80 columns the header wraps rather than
being cut, and the least telling columns give way so that the latest values keep room."""

from __future__ import annotations

from bridge.pb.v1 import events_pb2, watch_pb2
from server.cli.top import render, state_counts

T_MS = 1_700_000_000_000


def _update(clients: int) -> watch_pb2.WatchUpdate:
    update = watch_pb2.WatchUpdate(time_ms=T_MS)
    update.receiver.mlflow_reachable = True
    update.receiver.backlog_events = 12345
    for i in range(clients):
        state = "finished" if i == 0 else "connected"
        c = update.clients.add(
            job="mnist-fedavg", client_id=f"site-{i + 1}", state=state, connected=i != 0
        )
        c.last_seen_ms = T_MS - 2000
        c.events_per_s = 123.4
        c.events_received = 1_234_567
        c.backlog_events = 42
        c.latest.extend(
            [
                events_pb2.Metric(key="train/loss", value=0.123456, step=99),
                events_pb2.Metric(key="eval/accuracy", value=0.9, step=9),
            ]
        )
    return update


def test_at_80_columns_the_header_and_the_latest_values_stay() -> None:
    frame = render(
        _update(3), receiver="127.0.0.1:50551", job="mnist-fedavg", width=80, height=24, color=False
    )
    assert all(len(line) <= 80 for line in frame), frame
    header = " ".join(frame[: frame.index("")])
    for part in ("127.0.0.1:50551", "job mnist-fedavg", "3 clients: 2 connected, 1 finished"):
        assert part in header, frame
    assert "MLflow reachable" in header and "126 events not yet in MLflow" in header, frame
    columns = next(line for line in frame if line.startswith("CLIENT"))
    assert columns.rstrip().endswith("LATEST"), columns
    assert "STATE" in columns and "BACKLOG" in columns, columns
    rows = [line for line in frame if line.startswith("site-")]
    assert len(rows) == 3
    assert all("train/loss=0.12346" in row for row in rows), rows


def test_a_wide_terminal_shows_every_column() -> None:
    frame = render(_update(2), receiver="r:1", job="", width=200, height=24, color=False)
    columns = next(line for line in frame if "CLIENT" in line)
    for title in ("JOB", "EV/S", "LAG", "RECEIVED", "BACKLOG", "UNACKED", "DEAD", "LATEST"):
        assert title in columns, columns
    assert "12345 events not yet in MLflow" in frame[0]  # all jobs: the receiver's backlog


def test_state_counts() -> None:
    assert state_counts([]) == "no clients yet"
    assert state_counts(list(_update(1).clients)) == "1 client: 1 finished"
