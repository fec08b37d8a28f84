"""Splitting a run's pending entries into requests MLflow's log_batch accepts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bridge.events import Metric, Param, Tag

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_REQUEST_BYTES = 1_000_000
MAX_EVENT_BYTES = 1 << 20
"""The most one event may take on the wire (a run start with its description and tags is the
only event without a size bound of its own). Anything larger could not travel in one message to
a receiver, nor in one MLflow request, so it is refused at the call."""
# log_batch travels as JSON; this is a safe upper estimate of an entity's framing in it.
_JSON_OVERHEAD_BYTES = 80
# Keep clear of the hard limit: the run id and the envelope travel in the same request.
_REQUEST_BUDGET_BYTES = MAX_REQUEST_BYTES - 10_000


@dataclass(frozen=True, slots=True)
class LogBatchChunk:
    """One ``MlflowClient.log_batch`` call's worth of entries."""

    metrics: tuple[Metric, ...]
    params: tuple[Param, ...]
    tags: tuple[Tag, ...]
    entries: int = 0
    """How many of the input entries this chunk covers (a param or tag key repeated within
    the chunk is sent once), so that a caller can tell how far its input has been written."""

    def __len__(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags)


def _json_size(entry: Metric | Param | Tag) -> int:
    if isinstance(entry, Metric):
        # value, timestamp and step are JSON numbers of at most ~25 characters each
        return len(json.dumps(entry.key)) + _JSON_OVERHEAD_BYTES
    return len(json.dumps(entry.key)) + len(json.dumps(entry.value)) + _JSON_OVERHEAD_BYTES


ROUND_METRIC = "trackbridge.round"
"""The metric a point's federated round is written as, at the point's step and time, unless
the receiver writes rounds as MLflow's step (``trackbridge serve --round-as-step``)."""


def split_log_batch(
    entries: Iterable[Metric | Param | Tag], *, reserve_tags: int = 0, round_key: str = ""
) -> Iterator[LogBatchChunk]:
    """Groups entries, in order, into chunks within every log_batch limit.

    Limits: 1000 metrics, 100 params, 100 tags, 1000 entities and about 1 MB per request.
    Within a chunk a param key appears once (MLflow rejects duplicate keys in one request; a
    changed value starts a new chunk) and a tag key keeps its last value (the value a sequence
    of set_tag calls would leave). ``reserve_tags`` keeps room for tags the caller adds to
    every chunk: MLflow's client splits a request past the limits into several, and the caller's
    tags must travel in the same request as the rest. With ``round_key``, a metric point with
    a round brings a point ``round_key`` = its round at its step and time, in the same chunk
    (once per step, time and round in a chunk).
    """
    metrics: list[Metric] = []
    params: dict[str, Param] = {}
    tags: dict[str, Tag] = {}
    rounds: set[tuple[int, int, int]] = set()
    size = 0
    covered = 0
    max_entities = MAX_ENTITIES_PER_BATCH - reserve_tags
    max_tags = MAX_PARAMS_TAGS_PER_BATCH - reserve_tags

    def chunk() -> LogBatchChunk:
        return LogBatchChunk(tuple(metrics), tuple(params.values()), tuple(tags.values()), covered)

    for entry in entries:
        entry_size = _json_size(entry)
        extra = (
            (entry.step, entry.timestamp_ms, entry.round)
            if round_key and isinstance(entry, Metric) and entry.round
            else None
        )
        full = (
            len(metrics) + len(params) + len(tags) >= max_entities
            or size + entry_size > _REQUEST_BUDGET_BYTES
            or (
                isinstance(entry, Metric)
                and len(metrics) >= MAX_METRICS_PER_BATCH - (extra is not None)
            )
            or (extra is not None and len(metrics) + len(params) + len(tags) + 1 >= max_entities)
            or (isinstance(entry, Param) and len(params) >= MAX_PARAMS_TAGS_PER_BATCH)
            # A param logged again with another value goes to the next request, where MLflow
            # refuses it (and the receiver dead-letters it) instead of it vanishing here.
            or (
                isinstance(entry, Param)
                and entry.key in params
                and params[entry.key].value != entry.value
            )
            or (isinstance(entry, Tag) and entry.key not in tags and len(tags) >= max_tags)
        )
        if full:
            yield chunk()
            metrics, params, tags, size, covered = [], {}, {}, 0, 0
            rounds = set()
        if isinstance(entry, Metric):
            metrics.append(entry)
            if extra is not None and extra not in rounds:
                rounds.add(extra)
                metrics.append(Metric(round_key, float(extra[2]), extra[0], extra[1]))
                size += _JSON_OVERHEAD_BYTES + len(round_key) + 2
        elif isinstance(entry, Param):
            params.setdefault(entry.key, entry)
        else:
            tags[entry.key] = entry
        size += entry_size
        covered += 1
    if metrics or params or tags:
        yield chunk()
