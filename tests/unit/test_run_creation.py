"""server/flush/run_creation.py's rule, as pure logic: receivers racing to create one run keep one.

The store is an in-memory fake with MLflow's read-your-writes behaviour; threads call it with
random pauses between steps, so each trial interleaves the creators differently. The real
thing, with MLflow on PostgreSQL, is in test_topology.py.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from server.flush.run_creation import (
    STALE_PROVISIONAL_MS,
    TAG_PROVISIONAL,
    RunContended,
    create_once,
    keep,
)
from server.queue.sqlite import Queue, connect


class FakeStore:
    """Runs with tags; every call is atomic, with a random pause before it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: dict[str, Any] = {}

    @staticmethod
    def _pause() -> None:
        time.sleep(random.uniform(0, 0.002))

    def search_runs(self, experiment_ids: list[str], filter_string: str, max_results: int) -> Any:
        self._pause()
        with self._lock:
            live = [r for r in self.runs.values() if not r.deleted]
            return [
                SimpleNamespace(info=r.info, data=SimpleNamespace(tags=dict(r.data.tags)))
                for r in live[:max_results]
            ]

    def create(self, extra: dict[str, str]) -> tuple[str, str]:
        self._pause()
        run_id = uuid.uuid4().hex
        info = SimpleNamespace(run_id=run_id, experiment_id="1", start_time=1)
        with self._lock:
            self.runs[run_id] = SimpleNamespace(
                info=info, data=SimpleNamespace(tags=dict(extra)), deleted=False
            )
        return run_id, "1"

    def delete_run(self, run_id: str) -> None:
        self._pause()
        with self._lock:
            self.runs[run_id].deleted = True

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._pause()
        with self._lock:
            self.runs[run_id].data.tags[key] = value

    def delete_tag(self, run_id: str, key: str) -> None:
        self._pause()
        with self._lock:
            del self.runs[run_id].data.tags[key]

    def kept(self) -> list[str]:
        return [
            r.info.run_id
            for r in self.runs.values()
            if not r.deleted and TAG_PROVISIONAL not in r.data.tags
        ]


def _create(
    store: FakeStore,
    out: list[str],
    errors: list[BaseException],
    creator: str,
    marked: bool = True,
) -> None:
    """One receiver's creation, retried; ``marked`` False: its first try is a run with no
    "creation attempted" mark (no look first), the retries have it."""
    try:
        for attempt in range(200):  # the flusher retries RunContended the same way, with backoff
            try:
                (run_id, _), _created = create_once(
                    store, ["1"], "f", store.create, creator=creator,
                    sleep=lambda s: time.sleep(0.001), look_first=marked or attempt > 0,
                )  # fmt: skip
            except RunContended:
                time.sleep(random.uniform(0, 0.005))
                continue
            out.append(run_id)
            return
        raise AssertionError("no run after 200 attempts")
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.parametrize("marked", [True, False])
@pytest.mark.parametrize("creators", [2, 3, 5])
def test_racing_creators_all_get_the_one_run_that_is_kept(creators: int, marked: bool) -> None:
    """``marked`` False: each receiver's first try creates without looking first (no run of its
    own can exist), as a receiver does for a run with no "creation attempted" mark."""
    for _ in range(40):
        store = FakeStore()
        got: list[str] = []
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_create, args=(store, got, errors, f"receiver-{i}", marked))
            for i in range(creators)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        assert len(got) == creators
        assert len(set(got)) == 1, got
        assert store.kept() == [got[0]]


def test_a_kept_run_is_returned_without_creating_another() -> None:
    store = FakeStore()
    run_id, _ = store.create({})
    assert create_once(store, ["1"], "f", store.create) == ((run_id, "1"), False)
    assert len(store.runs) == 1


def test_a_provisional_run_left_behind_is_ignored() -> None:
    store = FakeStore()
    old = str(time.time_ns() // 1_000_000 - STALE_PROVISIONAL_MS - 1)
    store.create({TAG_PROVISIONAL: old})
    (run_id, _), created = create_once(store, ["1"], "f", store.create)
    assert created and store.kept() == [run_id]


def test_a_creation_in_progress_is_waited_for_then_reported() -> None:
    store = FakeStore()
    store.create({TAG_PROVISIONAL: str(time.time_ns() // 1_000_000)})
    with pytest.raises(RunContended):
        create_once(store, ["1"], "f", store.create, wait_s=0.05, sleep=lambda s: None)
    assert len(store.runs) == 1  # it did not add a rival of its own


def _fresh_stamp(creator: str) -> str:
    return f"{time.time_ns() // 1_000_000} {creator}"


def test_a_receiver_adopts_the_provisional_run_it_left_when_it_died() -> None:
    store = FakeStore()
    left, _ = store.create({TAG_PROVISIONAL: _fresh_stamp("receiver-a")})
    (run_id, _), created = create_once(
        store, ["1"], "f", store.create, creator="receiver-a", wait_s=0.05
    )
    assert (run_id, created) == (left, True)
    assert store.kept() == [left] and len(store.runs) == 1


def test_a_receiver_killed_twice_while_creating_keeps_one_of_its_runs() -> None:
    store = FakeStore()
    first, _ = store.create({TAG_PROVISIONAL: _fresh_stamp("receiver-a")})
    second, _ = store.create({TAG_PROVISIONAL: _fresh_stamp("receiver-a")})
    (run_id, _), _created = create_once(store, ["1"], "f", store.create, creator="receiver-a")
    assert run_id == min(first, second)
    assert store.kept() == [run_id]
    assert [r.info.run_id for r in store.runs.values() if r.deleted] == [max(first, second)]


def test_another_receivers_provisional_run_is_not_adopted() -> None:
    store = FakeStore()
    store.create({TAG_PROVISIONAL: _fresh_stamp("receiver-b")})
    with pytest.raises(RunContended):
        create_once(
            store, ["1"], "f", store.create, creator="receiver-a", wait_s=0.05,
            sleep=lambda s: None,
        )  # fmt: skip
    assert store.kept() == [] and len(store.runs) == 1


class CountingStore(FakeStore):
    """Also records the calls in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def search_runs(self, experiment_ids: list[str], filter_string: str, max_results: int) -> Any:
        self.calls.append("search")
        return super().search_runs(experiment_ids, filter_string, max_results)

    def create(self, extra: dict[str, str]) -> tuple[str, str]:
        self.calls.append("create")
        return super().create(extra)

    def delete_tag(self, run_id: str, key: str) -> None:
        self.calls.append("keep")
        super().delete_tag(run_id, key)

    def delete_run(self, run_id: str) -> None:
        self.calls.append("delete")
        super().delete_run(run_id)


def test_a_creation_is_kept_by_its_caller_after_it_told_its_client() -> None:
    store = CountingStore()
    (run_id, _), created = create_once(store, ["1"], "f", store.create, defer_keep=True)
    assert created and store.calls == ["search", "create", "search"]
    assert store.kept() == []  # its client may be told the id now
    keep(store, run_id)  # type: ignore[arg-type]
    assert store.kept() == [run_id] and store.calls[-1] == "keep"


def test_a_look_that_finds_the_kept_run_deletes_its_own_provisional_ones_beside_it() -> None:
    store = FakeStore()
    kept, _ = store.create({})
    left, _ = store.create({TAG_PROVISIONAL: _fresh_stamp("receiver-a")})  # a failed step back
    assert create_once(store, ["1"], "f", store.create, creator="receiver-a") == (
        (kept, "1"),
        False,
    )
    assert store.runs[left].deleted and store.kept() == [kept]


def test_a_run_never_tried_is_created_then_looked_for_once() -> None:
    """No "creation attempted" mark: no look first; the look after still sees rivals."""
    store = CountingStore()
    (run_id, _), created = create_once(
        store, ["1"], "f", store.create, defer_keep=True, look_first=False
    )
    assert created and store.calls == ["create", "search"]
    keep(store, run_id)  # type: ignore[arg-type]
    assert store.kept() == [run_id]


def test_a_run_never_tried_beside_a_kept_one_steps_back_and_finds_it() -> None:
    """Another receiver made the run already: this one's run is deleted, and the next try (its
    mark set now) finds the kept one."""
    store = FakeStore()
    theirs, _ = store.create({})
    with pytest.raises(RunContended):
        create_once(store, ["1"], "f", store.create, creator="a", look_first=False)
    assert store.kept() == [theirs] and sum(not r.deleted for r in store.runs.values()) == 1
    assert create_once(store, ["1"], "f", store.create, creator="a") == ((theirs, "1"), False)


def test_the_creation_mark_is_kept_in_the_queue_and_an_older_queue_counts_as_tried(
    tmp_path: Path,
) -> None:
    """A run first stored has no mark; the mark survives a reopening and a later batch; a run
    of a queue written before the mark existed counts as tried (its receiver may have sent a
    create_run): it is looked for first."""
    path = tmp_path / "queue.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE runs (run_key TEXT PRIMARY KEY, client_id TEXT NOT NULL,"
        " job TEXT NOT NULL, acked_seq INTEGER NOT NULL DEFAULT 0,"
        " flushed_seq INTEGER NOT NULL DEFAULT 0, mlflow_run_id TEXT NOT NULL DEFAULT '',"
        " mlflow_experiment_id TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'RUNNING');"
        "INSERT INTO runs (run_key, client_id, job) VALUES ('old', 'site', 'job');"
    )
    old.commit()
    old.close()
    conn = connect(path)
    queue = Queue(conn)
    assert _tried(queue, "old")
    queue.store([("new", "site", "job", 1, 1, b"")])
    assert not _tried(queue, "new")
    queue.mark_create_tried(["new"])
    queue.store([("new", "site", "job", 2, 2, b"")])
    assert _tried(queue, "new")
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again after the mark
    conn.close()
    conn = connect(path)
    assert _tried(Queue(conn), "new") and _tried(Queue(conn), "old")
    conn.close()


def _tried(queue: Queue, run_key: str) -> bool:
    record = queue.run(run_key)
    assert record is not None
    return record.create_tried
