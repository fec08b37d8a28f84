"""Pure logic of the client's durability: destinations, the ledger record, drop counting,
batch numbering with reports, and what close() returns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bridge.convert import event_from_proto
from bridge.events import DROPPED_BUFFER_FULL, Dropped, Metric, RunEnd, RunStatus
from bridge.pb.v1 import events_pb2
from client_sdk import CloseResult, WriterConfig
from client_sdk._batches import DropCounter, RunState, build
from client_sdk.spool.ledger import read_ledger, write_ledger
from client_sdk.spool.names import Destination, normalized_receiver


def test_a_destination_ignores_the_order_of_receivers_but_not_their_names() -> None:
    a = Destination.of("r2:50551, r1:50551", "job", "site")
    assert a == Destination.of("r1:50551,r2:50551", "job", "site")
    assert a != Destination.of("r1:50551", "job", "site")
    assert a != Destination.of("r1:50551,r2:50551", "other-job", "site")
    with pytest.raises(ValueError, match="host:port"):
        normalized_receiver("no-port")


def test_the_ledger_survives_a_torn_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "x.spool.db.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        destination = Destination.of("127.0.0.1:1", "job", "site")
        write_ledger(fd, destination, {"run": [10, 4], "other": [99, 99]}, path)
        write_ledger(fd, destination, {"run": [12, 4]}, path)  # shorter: the file is truncated
        assert read_ledger(fd, path) == (destination, {"run": [12, 4]})
        # A crash between the write and the truncate leaves the old tail behind the record.
        os.pwrite(fd, json.dumps({"destination": None, "runs": {"r": [1, 0]}}).encode(), 0)
        assert read_ledger(fd, path) == (None, {"r": [1, 0]})
        os.pwrite(fd, b"{not json", 0)
        assert read_ledger(fd, path) is None
    finally:
        os.close(fd)


def test_drops_are_counted_per_run_and_merged_when_put_back() -> None:
    drops = DropCounter()
    for _ in range(3):
        drops.add("a")
    assert drops.add("b") == 4 and drops.due
    taken = dict(drops.take())
    assert not drops.due and taken["a"].count == 3 and taken["b"].count == 1
    assert taken["a"].reason == DROPPED_BUFFER_FULL and taken["a"].first_ms <= taken["a"].last_ms
    drops.put_back(list(taken.items()))
    drops.add("a")
    assert dict(drops.take())["a"].count == 4 and drops.total == 5


def test_reports_are_numbered_after_the_events_in_batches_of_their_own() -> None:
    config = WriterConfig(client_id="site", max_batch_events=2)
    runs = {"r": RunState("r", next_seq=7)}
    items = [("r", "x", float(i), i, 1) for i in range(3)] + [("r", RunEnd(RunStatus.FINISHED, 2))]
    built = build(config, runs, items, [("r", Dropped(5, DROPPED_BUFFER_FULL, 0, 0, 1, 2))])
    assert [(b.first, b.last, b.report, b.ends) for b in built] == [
        (7, 8, False, True),
        (9, 10, False, True),
        (11, 11, True, False),
    ]
    assert runs["r"].next_seq == 7, "numbers are taken only once the batches are spooled"
    report = events_pb2.EventBatch.FromString(built[-1].payload)
    assert report.first_seq == 11 and len(report.events) == 1
    assert event_from_proto(report.events[0]) == Dropped(5, DROPPED_BUFFER_FULL, 0, 0, 1, 2)
    first = events_pb2.EventBatch.FromString(built[0].payload)
    assert event_from_proto(first.events[0]) == Metric("x", 0.0, 0, 1)


def test_close_result_is_the_int_it_always_was() -> None:
    result = CloseResult(3, 2, 1)
    assert result == 5 and int(result) == 5 and str(result) == "5" and f"{result}" == "5"
    assert json.dumps({"left": result}) == '{"left": 5}' and result + 1 == 6
    assert (result.undelivered_events, result.dropped_events, result.artifacts_left) == (3, 2, 1)
    assert "dropped_events=2" in repr(result)


def test_a_spool_its_writer_deleted_is_not_made_again_by_an_adopter(tmp_path: Path) -> None:
    """A writer closing its empty spool deletes it; an adopter that listed it a moment before
    must find it gone, not make an empty spool that records no receiver in its place."""
    from client_sdk.spool.file import Spool
    from client_sdk.spool.finding import adopt_orphans
    from client_sdk.spool.names import SpoolGone

    spool = Spool.create(tmp_path, Destination.of("127.0.0.1:1", "job", "site"))
    path = spool.path
    assert spool.close(delete=True)
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(SpoolGone):
        Spool.adopt(path)  # as an adopter that listed the spool before it was deleted
    assert list(tmp_path.iterdir()) == []
    assert adopt_orphans(tmp_path, lambda _: True).adopted == []


def test_a_spool_whose_database_was_moved_aside_is_still_adopted(tmp_path: Path) -> None:
    from client_sdk.spool.file import Spool

    spool = Spool.create(tmp_path, Destination.of("127.0.0.1:1", "job", "site"))
    path = spool.path
    spool.close(delete=False)
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        (tmp_path / name).unlink(missing_ok=True)  # only the lock file, with its ledger, is left

    adopted = Spool.adopt(path)
    try:
        assert adopted.destination == Destination.of("127.0.0.1:1", "job", "site")
    finally:
        adopted.close(delete=False)
