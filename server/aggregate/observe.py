"""What an ingest transaction brings to the aggregates: the points of aggregated metrics and
the runs that start or end, read from the stored batches' events."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from bridge.pb.v1 import events_pb2
from server.queue.aggregates import Observed


class Selector:
    """Which metric keys are aggregated (``fnmatch`` globs, each key's answer cached)."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = tuple(patterns)
        self._seen: dict[str, bool] = {}

    def __call__(self, key: str) -> bool:
        hit = self._seen.get(key)
        if hit is None:
            hit = self._seen[key] = any(fnmatch.fnmatchcase(key, p) for p in self._patterns)
        return hit


def observe(
    selected: Selector, stored: Sequence[tuple[str, events_pb2.EventBatch, int]]
) -> Observed:
    """What the batches ``(owned run key, batch, first new sequence)`` bring: only events from
    the first new sequence on (a partial resend brings its tail only)."""
    seen = Observed([], [], [])
    for run_key, batch, first_new in stored:
        skip = first_new - batch.first_seq
        job, client = batch.job, batch.client_id
        for raw in batch.events[skip:] if skip else batch.events:
            kind = raw.WhichOneof("kind")
            if kind == "metric":
                m = raw.metric
                if selected(m.key):
                    by_round = 1 if m.round > 0 else 0
                    slot = m.round if by_round else m.step
                    seen.points.append(
                        (job, m.key, by_round, slot, client, m.value, m.num_examples)
                    )
            elif kind == "run_start":
                seen.opened.append((run_key, job, client))
            elif kind == "run_end":
                seen.ended.append(run_key)
    return seen
