"""server/flush/run_creation.py's rule, as pure logic: receivers racing to create one run keep one.

The store is an in-memory fake with MLflow's read-your-writes behaviour; threads call it with
random pauses between steps, so each trial interleaves the creators differently. The real
thing, with MLflow on PostgreSQL, is in test_topology.py.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
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


def _create(store: FakeStore, out: list[str], errors: list[BaseException], creator: str) -> None:
    try:
        for _ in range(200):  # the flusher retries RunContended the same way, with backoff
            try:
                (run_id, _), _created = create_once(
                    store, ["1"], "f", store.create, creator=creator,
                    sleep=lambda s: time.sleep(0.001),
                )  # fmt: skip
            except RunContended:
                time.sleep(random.uniform(0, 0.005))
                continue
            out.append(run_id)
            return
        raise AssertionError("no run after 200 attempts")
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.parametrize("creators", [2, 3, 5])
def test_racing_creators_all_get_the_one_run_that_is_kept(creators: int) -> None:
    for _ in range(40):
        store = FakeStore()
        got: list[str] = []
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_create, args=(store, got, errors, f"receiver-{i}"))
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
