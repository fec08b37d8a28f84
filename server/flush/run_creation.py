"""Creating an MLflow run once, when several receivers may try at the same moment.

Receivers share nothing but MLflow, and MLflow has no "create if absent": two receivers that
look for a run (by its tags), both miss and both create it, would make two runs. So a run is
created *provisional* (tagged ``trackbridge.provisional`` with the creation time), then looked
for again. Alone, it is kept: the tag is removed. Beside a kept run, or a provisional one with a
smaller id, it is deleted and the caller retries (``RunContended``) and finds the kept one.
Beside provisional runs with larger ids only, it waits for those to be deleted (their creators
see it) or kept (their creators did not see it: then it steps back). Lookups ignore
provisional runs; a receiver that finds only provisional ones waits for them to settle.

Why at most one run is kept: a creator that found its run alone searched after creating it, so
any rival created before that search was visible to it, and any rival created after it sees
this run (which is never deleted once kept) and steps back. A provisional run older than a
minute (its creator died between the two steps) is ignored, not deleted: deleting a run that
another receiver might still keep is worse than leaving an empty one behind.

A receiver killed between the two steps leaves its provisional run behind. The tag names the
receiver that created it (its id lives in the data directory, which one receiver holds at a
time), so the receiver, restarted on the same data directory, adopts that run as if it had just
created it, instead of waiting for it to go stale and leaving an empty run beside the new one.

A run it created is told to the caller before the provisional tag is removed
(``defer_keep``: the caller removes it, :func:`keep`, once it has told its client the run id);
a look that finds a kept run deletes provisional runs of its own beside it.

The first look is skipped for a run no create_run of this receiver can have made: before each
create_run the caller sets the run's durable "creation attempted" mark (:class:`CreationMark`,
the run's queue row); a run without it is created at once and looked for after (any rival is
seen then, as above), one with it (a crash, a lost answer, a timeout) is looked for first, so
this receiver's own earlier run is found or adopted, never doubled. A receiver alone with its
MLflow (``serve --alone``) skips both looks for a run without the mark: one create_run.

This rests on MLflow's store being read-your-writes consistent (one database; no lagging read
replica behind the tracking server).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from server.flush.refusals import is_missing

TAG_PROVISIONAL = "trackbridge.provisional"
"""Set on a run between its creation and the check that no other receiver created it too:
``"<creation time, ms> <creator id>"``."""

STALE_PROVISIONAL_MS = 60_000
"""A provisional run older than this was left behind by a receiver that died; it is ignored."""

WAIT_S = 10.0
"""How long a receiver waits for another receiver's creation of the same run to settle."""

_MAX_MATCHES = 100
_POLL_S = 0.2


class CreationMark(Protocol):
    """A run's durable "creation attempted" mark (its row in the receiver's queue)."""

    def tried(self) -> bool:
        """Whether a create_run of the run may have left this receiver (crash, lost answer)."""

    def attempt(self) -> None:
        """Sets the mark, durably; called right before each create_run of the run leaves."""


class RunContended(Exception):
    """Another receiver is creating the same run right now: try again after a short pause."""


class RunNotCreated(Exception):
    """The run's start is with another receiver, which has not created the MLflow run yet."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def stamp(creator: str) -> str:
    """The value of a provisional run's tag: now, and who created it."""
    return f"{_now_ms()} {creator}".rstrip()


def _provisional_age_ms(run: Any, now_ms: int) -> int | None:
    """How old a provisional run is; None for a run in use."""
    stamp = run.data.tags.get(TAG_PROVISIONAL)
    if stamp is None:
        return None
    try:
        return now_ms - int(stamp.split(" ", 1)[0])
    except ValueError:
        return STALE_PROVISIONAL_MS  # not ours to interpret: treat as left behind


def _left_by(creator: str, runs: Sequence[Any]) -> list[Any]:
    """The provisional runs among ``runs`` that ``creator`` made in an earlier life."""
    if not creator:
        return []
    return [r for r in runs if r.data.tags.get(TAG_PROVISIONAL, "").partition(" ")[2] == creator]


def settled(runs: Sequence[Any]) -> tuple[str, str] | None:
    """``(run_id, experiment_id)`` of the run in use among ``runs`` (MLflow ``Run`` objects),
    or None. Were there ever several (a run kept by a receiver stalled for a minute), the oldest
    wins, ties broken by id, so that every receiver picks the same one."""
    kept = [r for r in runs if TAG_PROVISIONAL not in r.data.tags]
    if not kept:
        return None
    best = min(kept, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return best.info.run_id, str(best.info.experiment_id)


def matching(client: MlflowClient, experiment_ids: Sequence[str], filter_string: str) -> list[Any]:
    """Live runs of ``experiment_ids`` matching ``filter_string``."""
    if not experiment_ids:
        return []
    runs: list[Any] = client.search_runs(
        list(experiment_ids), filter_string, max_results=_MAX_MATCHES
    )
    return runs


def other_experiment_ids(client: MlflowClient, skip: Sequence[str]) -> list[str]:
    """Every live experiment's id but ``skip`` (where a run whose start is elsewhere may be)."""
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids.extend(str(e.experiment_id) for e in page if str(e.experiment_id) not in skip)
        token = page.token
        if not token:
            return ids


def create_once(
    client: MlflowClient,
    experiment_ids: Sequence[str],
    filter_string: str,
    create: Callable[[dict[str, str]], tuple[str, str]],
    *,
    creator: str = "",
    defer_keep: bool = False,
    look_first: bool = True,
    wait_s: float = WAIT_S,
    sleep: Callable[[float], object] = time.sleep,
) -> tuple[tuple[str, str], bool]:
    """The one run matching ``filter_string`` in ``experiment_ids``, created when there is none.

    Args:
        client: The MLflow client.
        experiment_ids: Where a matching run may be.
        filter_string: An MLflow search filter that only the wanted run matches.
        create: Creates the run with the extra tags it is given; returns its
            ``(run_id, experiment_id)``.
        creator: This receiver's id, kept across its restarts: a provisional run it left
            behind when it died is adopted rather than created again.
        defer_keep: Leave a run it created provisional, for the caller to :func:`keep` (a
            restart adopts the run if that call is lost).
        look_first: Look for the run before creating it. False only where this receiver
            cannot have created it before (no create_run of it ever left: the queue's mark):
            another receiver's run is then seen by the look after creating, as a rival.
        wait_s: How long to wait for another receiver's creation to settle.
        sleep: Pauses between looks (tests pass a fake).

    Returns:
        ``((run_id, experiment_id), created)``.

    Raises:
        RunContended: Another receiver's creation did not settle within ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    ref: tuple[str, str] | None = None
    mine: list[Any] = []
    if look_first:
        ref, mine = _look(
            client, experiment_ids, filter_string, creator=creator, deadline=deadline, sleep=sleep
        )
    if ref is not None:
        return ref, False
    if mine:  # created before this receiver died: carry on as if it had just been created
        run_id, experiment_id = mine[0].info.run_id, str(mine[0].info.experiment_id)
        client.set_tag(run_id, TAG_PROVISIONAL, stamp(creator))
        for extra in mine[1:]:
            client.delete_run(extra.info.run_id)
    else:
        run_id, experiment_id = create({TAG_PROVISIONAL: stamp(creator)})
    while True:
        rivals = live_rivals(matching(client, experiment_ids, filter_string), run_id)
        if not rivals:
            if not defer_keep:
                keep(client, run_id)
            return (run_id, experiment_id), True
        # Created at the same moment as others: the smallest id waits for the rest to step
        # back (they see it) or to be kept (they did not see it): then it steps back itself.
        kept = settled(rivals) is not None
        if kept or min(r.info.run_id for r in rivals) < run_id or time.monotonic() >= deadline:
            client.delete_run(run_id)
            raise RunContended(f"another receiver created the run too ({filter_string})")
        sleep(_POLL_S)


def _look(
    client: MlflowClient,
    experiment_ids: Sequence[str],
    filter_string: str,
    *,
    creator: str,
    deadline: float,
    sleep: Callable[[float], object],
) -> tuple[tuple[str, str] | None, list[Any]]:
    """The first look: the run in use, if any; else the provisional runs ``creator`` left (to
    adopt). Someone else creating it right now: waits for their run rather than race."""
    while True:
        found = matching(client, experiment_ids, filter_string)
        ref = settled(found)
        if ref is not None:
            for extra in _left_by(creator, found):  # ours, never kept (a failed step back)
                client.delete_run(extra.info.run_id)
            return ref, []
        mine = sorted(_left_by(creator, found), key=lambda r: r.info.run_id)
        if mine or not live_rivals(found, ""):
            return None, mine
        if time.monotonic() >= deadline:
            raise RunContended(f"another receiver is creating the run ({filter_string})")
        sleep(_POLL_S)


def keep(client: MlflowClient, run_id: str) -> None:
    """Marks a run created provisional as the one in use (the last step of creating it)."""
    delete_tag_once(client, run_id, TAG_PROVISIONAL)


def delete_tag_once(client: MlflowClient, run_id: str, key: str) -> None:
    """Deletes a run's tag; idempotent. MLflow refuses to delete a tag the run no longer has
    (RESOURCE_DOES_NOT_EXIST), which is what a retry meets when an earlier try's answer was
    lost (a connection cut after MLflow deleted the tag): the tag is gone, as asked. A run
    MLflow does not have still raises."""
    try:
        client.delete_tag(run_id, key)
    except MlflowException as exc:
        if not is_missing(exc):
            raise
        if key in client.get_run(run_id).data.tags:  # get_run: the run is there
            raise


def live_rivals(runs: Sequence[Any], mine: str) -> list[Any]:
    """Runs other than ``mine`` that are in use or still being created (not stale)."""
    now = _now_ms()
    return [
        r
        for r in runs
        if r.info.run_id != mine and (_provisional_age_ms(r, now) or 0) < STALE_PROVISIONAL_MS
    ]
