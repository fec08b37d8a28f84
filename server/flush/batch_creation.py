"""Creating a job's new runs together: a thousand clients starting at once.

Run by run, creating a client run costs five MLflow calls (look for it, create it provisional,
look again, keep it, check its parent), which made a 1000-client job start take about a minute.
Before each cycle's turns the flusher gathers the runs whose next event is their start and that
have no MLflow run yet (:func:`new_runs`), and :class:`BatchCreator` makes them by job:

1. one search for all the job's client runs: a key that has a run already, or that another
   receiver is creating right now, or that this receiver left provisional when it died, is left
   to the run-by-run path (server/flush/run_creation.py), which finds, waits or adopts. No
   search when none of the runs has its "creation attempted" mark (the queue's): this receiver
   never sent a create_run for any of them, and a rival's run is seen in step 3;
2. the others are marked, durably, then created provisional, several at once on a few threads;
3. one search again for all of them: a run alone with its key is kept (its provisional tag
   removed, again on the threads); one beside a rival is deleted, and its key goes the
   run-by-run path, which settles the contest as it always did.

So a job's start costs two searches, two calls per run spread over the threads, and one look
at the job's parent run. Two receivers still keep one run per key: step 3 is
run_creation.py's second look, made for many keys in one search, and its argument holds for
each key (a run was looked for again after it was created; one of its rivals created later
sees it). Deleting a provisional run of one's own is always safe: it was never kept.

A receiver that is alone (``serve --alone``, or the embedded store, which no other receiver
reaches) has no rival to look for: steps 2 and 3 become one ``create_run`` per run, kept at
once, and a start with no mark costs that call alone. Whether it is alone is for the operator
to say: MLflow cannot tell, and a receiver that guessed wrong could give a client moving
between receivers two runs.

Only the common starts are batched: nested runs, resumed runs and runs in an experiment named
by id take the run-by-run path. A run's key is searched by its job's tag here, so a client that
reused a run key under another job gets a new run rather than the old one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.convert import event_from_proto
from bridge.events import RunStart
from bridge.pb.v1 import events_pb2
from server.flush.run_creation import TAG_PROVISIONAL, live_rivals, stamp
from server.flush.run_tags import TAG_CLIENT_ID, TAG_JOB, TAG_ROLE, TAG_RUN_KEY, client_run_tags
from server.flush.sink import MlflowSink, RunRef
from server.queue.aggregates import is_aggregate_run
from server.queue.sqlite import Queue
from server.security.ownership import client_run_key

_logger = logging.getLogger(__name__)

CREATION_THREADS = 8
"""MLflow calls in flight at once while a batch of runs is created."""

_PAGE = 1000

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class NewRun:
    """A client run whose start is the next event to write, and that has no MLflow run yet."""

    run_key: str
    """The receiver's key of the run (``<client id>/<run key>`` when owned)."""
    client_id: str
    job: str
    start: RunStart
    tried: bool = True
    """A create_run of it may have left before (its queue mark): it is looked for first."""


def new_runs(queue: Queue, run_keys: Iterable[str]) -> list[NewRun]:
    """The runs among ``run_keys`` that a batch may create: their first event, not yet
    written, is a plain run start (not nested, not resumed, no experiment id)."""
    found = []
    for run_key in run_keys:
        if is_aggregate_run(run_key):
            continue
        record = queue.run(run_key)
        if record is None or record.mlflow_run_id or record.quarantine:
            continue
        batches = queue.pending(run_key, 1)
        if not batches or batches[0].first_seq != 1 or batches[0].done_seq >= 1:
            continue
        events = events_pb2.EventBatch.FromString(batches[0].payload).events
        start = event_from_proto(events[0]) if events else None
        if isinstance(start, RunStart) and _batchable(start):
            found.append(NewRun(run_key, record.client_id, record.job, start, record.create_tried))
    return found


def _batchable(start: RunStart) -> bool:
    return not (start.parent_run_key or start.resume_run_id or start.experiment_id)


class BatchCreator:
    """Creates many new client runs with a few MLflow calls each (see the module docstring)."""

    def __init__(
        self,
        sink: MlflowSink,
        creator: str,
        *,
        alone: bool,
        attempting: Callable[[list[str]], None] = lambda run_keys: None,
        threads: int = CREATION_THREADS,
    ) -> None:
        self._sink = sink
        self._creator = creator
        self._alone = alone
        self._attempting = attempting
        """Sets the runs' durable "creation attempted" marks (server/queue/sqlite.py)."""
        self._threads = threads

    def create(self, runs: Sequence[NewRun]) -> dict[str, RunRef]:
        """Creates what it can of ``runs``; returns the MLflow run of each run key it created.
        The others are left to the run-by-run path. Raises what MLflow raised before anything
        was created (a failure after that leaves only runs the run-by-run path adopts)."""
        groups: defaultdict[tuple[str, str], list[NewRun]] = defaultdict(list)
        for run in runs:
            groups[(run.job, self._sink.experiment_id(run.start.experiment or run.job))].append(run)
        made: dict[str, RunRef] = {}
        for (job, exp_id), group in groups.items():
            made.update(self._create_group(job, exp_id, group))
        return made

    def _create_group(self, job: str, exp_id: str, runs: list[NewRun]) -> dict[str, RunRef]:
        where = list(dict.fromkeys((exp_id, self._sink.experiment_id(job))))
        # Runs no create_run ever left for are not looked for (step 1 is for the others).
        found = self._job_runs(where, job) if any(r.tried for r in runs) else {}
        fresh = [r for r in runs if not found.get(_key(r))]
        if not fresh:
            return {}
        parent = None
        if not all(r.start.top_level for r in fresh):
            parent = self._sink.parent_run(job, exp_id)
            self._sink.reopen_parent(parent)
        client = self._sink.client
        tag = {} if self._alone else {TAG_PROVISIONAL: stamp(self._creator)}

        def request(run: NewRun) -> tuple[dict[str, str], str, int | None]:
            spec = run.start
            tags = client_run_tags(
                run.client_id,
                job,
                client_run_key(run.run_key),
                spec,
                None if spec.top_level or parent is None else parent.run_id,
            )
            return tags | tag, spec.run_name or run.client_id, spec.start_time_ms or None

        def create(run: NewRun) -> str:
            tags, name, start_time = request(run)
            created = client.create_run(exp_id, start_time=start_time, tags=tags, run_name=name)
            return str(created.info.run_id)

        self._attempting([r.run_key for r in fresh])  # durably, before any create leaves
        together = self._sink.create_runs(exp_id, [request(r) for r in fresh])
        results: list[str | Exception] = (
            list(together) if together is not None else _each(self._threads, create, fresh)
        )
        created = [(r, i) for r, i in zip(fresh, results, strict=True) if isinstance(i, str)]
        kept = created if self._alone else self._keep(where, job, created)
        made: dict[str, RunRef] = {}
        for run, run_id in kept:
            ref = made[run.run_key] = RunRef(run_id, exp_id)
            self._sink.remember(run.client_id, run.run_key, ref)
        _logger.info(
            "job %r: %d new runs created together, %d left to be created one by one",
            job,
            len(made),
            len(runs) - len(made),
        )
        return made

    def _keep(
        self, where: list[str], job: str, created: list[tuple[NewRun, str]]
    ) -> list[tuple[NewRun, str]]:
        """Looks again (step 3): keeps the provisional runs alone with their key, deletes the
        others; returns those kept."""
        client = self._sink.client
        after = self._job_runs(where, job)
        alone = [(r, i) for r, i in created if not live_rivals(after[_key(r)], i)]
        beside = [i for r, i in created if (r, i) not in alone]
        for result in _each(self._threads, client.delete_run, beside):
            if isinstance(result, Exception):  # left provisional: ignored once stale
                _logger.warning("a contended provisional run was not deleted: %s", result)
        untagged = _each(
            self._threads,
            lambda run_id: client.delete_tag(run_id, TAG_PROVISIONAL),
            [run_id for _, run_id in alone],
        )
        # One still provisional (its tag not removed) is adopted by the run-by-run path.
        return [
            pair for pair, r in zip(alone, untagged, strict=True) if not isinstance(r, Exception)
        ]

    def _job_runs(self, where: list[str], job: str) -> dict[tuple[str, str], list[Any]]:
        """Every live client run of ``job`` in ``where``, by (client id, run key)."""
        query = f"tags.`{TAG_JOB}` = '{_quote(job)}' and tags.`{TAG_ROLE}` = 'client'"
        by_key: defaultdict[tuple[str, str], list[Any]] = defaultdict(list)
        token = None
        while True:
            page = self._sink.client.search_runs(where, query, max_results=_PAGE, page_token=token)
            for run in page:
                tags = run.data.tags
                by_key[(tags.get(TAG_CLIENT_ID, ""), tags.get(TAG_RUN_KEY, ""))].append(run)
            token = page.token
            if not token:
                return by_key


def _key(run: NewRun) -> tuple[str, str]:
    return run.client_id, client_run_key(run.run_key)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _each(threads: int, fn: Callable[[T], R], items: Sequence[T]) -> list[R | Exception]:
    """``fn`` of every item, ``threads`` at a time; an item's exception in its place."""

    def guarded(item: T) -> R | Exception:
        try:
            return fn(item)
        except Exception as exc:
            return exc

    if not items:
        return []
    with ThreadPoolExecutor(min(threads, len(items)), "trackbridge-create") as pool:
        return list(pool.map(guarded, items))
