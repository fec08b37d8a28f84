"""The queue's quarantine and replay (server/queue/dead_letters.py) on real SQLite files: held
batches stay as stored, replay puts everything back in sequence order, and an older queue is
upgraded in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.convert import batch_to_proto
from bridge.events import EventBatch, Metric, Param
from server.queue.dead_letters import list_dead_letters, replay
from server.queue.schema import QueueCorrupt, connect
from server.queue.sqlite import DeadLetter, Queue


def _payload(run_key: str, first_seq: int, count: int) -> bytes:
    events = tuple(Metric("x", float(s), s, s) for s in range(first_seq, first_seq + count))
    return batch_to_proto(EventBatch("c", "j", run_key, first_seq, events)).SerializeToString()


def _store(queue: Queue, run_key: str, first_seq: int, count: int) -> None:
    last = first_seq + count - 1
    queue.store([(run_key, "c", "j", first_seq, last, _payload(run_key, first_seq, count))])


def _seqs(queue: Queue, run_key: str) -> list[tuple[int, int]]:
    return [(b.first_seq, b.last_seq) for b in queue.pending(run_key, 100)]


def test_a_quarantined_run_holds_its_batches_and_replay_releases_them_in_order(
    tmp_path: Path,
) -> None:
    queue = Queue(connect(tmp_path / "queue.db"))
    _store(queue, "bad", 1, 10)
    _store(queue, "good", 1, 5)
    queue.advance("bad", [], (queue.pending("bad", 1)[0].id, 4), flushed_seq=4, written=4)
    param = batch_to_proto(EventBatch("c", "j", "bad", 11, (Param("p", "v"),)))
    queue.advance(
        "bad", [], None, flushed_seq=4, written=0,
        dead=[DeadLetter("param", "p", "v", "refused", 11, param.SerializeToString())],
    )  # fmt: skip
    queue.quarantine("bad", "MLflow run r was deleted: restore it, then replay")
    _store(queue, "bad", 12, 3)  # arrives while held
    assert queue.runs_with_pending() == ["good"]
    (held,) = queue.held()
    assert (held.run_key, held.batches, held.events) == ("bad", 2, 6 + 3)
    assert queue.flushable_count() == 1
    assert queue.pending_events() == 5 + 9

    listed = list_dead_letters(queue._conn)
    assert [q["run_key"] for q in listed["quarantined_runs"]] == ["bad"]
    assert [(e["kind"], e["key"], e["replayable"]) for e in listed["entries"]] == [
        ("param", "p", True)
    ]
    done = replay(queue._conn, run_keys=["bad"])
    assert (done.runs, done.held_events, done.entries) == (("bad",), 9, 1)
    # The refused param (seq 11) goes back between the held batches, by sequence number.
    assert _seqs(queue, "bad") == [(1, 10), (11, 11), (12, 14)]
    assert queue.pending("bad", 1)[0].done_seq == 4  # what was written stays written
    assert queue.held() == [] and queue.runs_with_pending() == ["good", "bad"]
    assert queue.requeued_events() == 1
    assert list_dead_letters(queue._conn)["entries"] == []


def test_replay_by_reason_and_new_run(tmp_path: Path) -> None:
    queue = Queue(connect(tmp_path / "queue.db"))
    for key in ("a", "b"):
        _store(queue, key, 1, 2)
        queue.set_mlflow_run(key, f"run-{key}", "1")
    queue.quarantine("a", "MLflow run run-a no longer exists (deleted for good)")
    queue.quarantine("b", "MLflow experiment 'j' (id 1) was deleted")
    with pytest.raises(ValueError, match="name what to replay"):
        replay(queue._conn)
    done = replay(queue._conn, reason="no longer exists", new_run=True)
    assert done.runs == ("a",)
    assert [h.run_key for h in queue.held()] == ["b"]
    records = {r.run_key: r for r in queue.runs()}
    assert records["a"].mlflow_run_id == "" and records["a"].quarantine == ""
    assert records["b"].mlflow_run_id == "run-b"
    assert replay(queue._conn, everything=True).runs == ("b",)


def test_entries_of_a_run_that_flows_go_after_what_it_queued(tmp_path: Path) -> None:
    queue = Queue(connect(tmp_path / "queue.db"))
    _store(queue, "r", 1, 3)
    (first,) = queue.pending("r", 10)
    dead = DeadLetter("metric", "x", "2.0", "refused", 2, _payload("r", 2, 1))
    queue.advance("r", [first.id], None, flushed_seq=3, written=2, dead=[dead])
    _store(queue, "r", 4, 3)
    replay(queue._conn, run_keys=["r"])
    assert _seqs(queue, "r") == [(4, 6), (2, 2)]


def test_an_older_queue_is_upgraded_and_a_damaged_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE runs (run_key TEXT PRIMARY KEY, client_id TEXT NOT NULL, job TEXT NOT NULL,"
        " acked_seq INTEGER NOT NULL DEFAULT 0, flushed_seq INTEGER NOT NULL DEFAULT 0,"
        " mlflow_run_id TEXT NOT NULL DEFAULT '', mlflow_experiment_id TEXT NOT NULL DEFAULT '',"
        " status TEXT NOT NULL DEFAULT 'RUNNING');"
        "CREATE TABLE batches (id INTEGER PRIMARY KEY, run_key TEXT NOT NULL,"
        " first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, payload BLOB NOT NULL);"
        "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, run_key TEXT NOT NULL,"
        " kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, reason TEXT NOT NULL,"
        " at_ms INTEGER NOT NULL);"
        "INSERT INTO runs (run_key, client_id, job, acked_seq) VALUES ('r', 'c', 'j', 2);"
        "INSERT INTO dead_letters VALUES (1, 'r', 'param', 'p', 'v', 'refused', 0);"
    )
    old.execute(
        "INSERT INTO batches (run_key, first_seq, last_seq, payload) VALUES ('r', 1, 2, ?)",
        (_payload("r", 1, 2),),
    )
    old.commit()
    old.close()
    queue = Queue(connect(path))
    assert queue.pending_events() == 2 and queue.runs_with_pending() == ["r"]
    (entry,) = list_dead_letters(queue._conn)["entries"]
    assert entry["replayable"] is False  # kept by an older receiver, without the event
    queue._conn.close()

    path.write_bytes(b"not a database at all, and long enough to be read as a header" * 4)
    with pytest.raises(QueueCorrupt, match="is damaged"):
        connect(path)
