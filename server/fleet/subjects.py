"""Names in JetStream, and how a client batch becomes messages.

Never a raw name in a subject or key: a subject over 4 KiB makes the server drop the
connection (nats-py then closes it for good), and client ids may hold any character. Runs are
named by a hash of their owned key; the full key travels in the message and the records.
"""

from __future__ import annotations

import hashlib

from bridge.pb.v1 import events_pb2

STREAM = "TB_BATCHES"
SUBJECT_ROOT = "tb.b"
RUNS_BUCKET = "tb_runs"
"""Run registry: who owns a run, its job, its MLflow run once made."""
PROGRESS_BUCKET = "tb_progress"
"""How far each run got into MLflow (only the flusher holding its lane writes it)."""
LIVE_BUCKET = "tb_live"
"""Each receiver's live clients, so that every receiver shows the whole fleet."""
HEARD_SUBJECT = "tb.heard"
"""Core NATS (no persistence): a run's client was heard, for the flushers' run leases."""
HEADER_KEY = "Tb-Run-Key"
HEADER_SEQ = "Tb-Seq-Range"
MSG_ID = "Nats-Msg-Id"
# Room for headers and the protobuf framing of a message beside its events.
_OVERHEAD_BYTES = 8 * 1024


def token(text: str, size: int = 16) -> str:
    """A stable hex name for ``text`` (blake2b of ``size`` bytes)."""
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def partition(key: str, partitions: int) -> int:
    """The lane of a run (an owned key): every batch of a run goes through the same one."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def subject(key: str, partitions: int) -> str:
    """The subject of a run's batches: ``tb.b.<lane>.<run token>``."""
    return f"{SUBJECT_ROOT}.{partition(key, partitions)}.{token(key)}"


def lane_filter(lane: int) -> str:
    """The subjects of one lane (a flusher's durable consumer filters on it)."""
    return f"{SUBJECT_ROOT}.{lane}.>"


def msg_id(key: str, first_seq: int, last_seq: int) -> str:
    """JetStream's dedupe id of a run's events ``first_seq..last_seq``: a retry through any
    receiver stores nothing twice."""
    return f"{token(key)}:{first_seq}-{last_seq}"


def run_record_key(key: str) -> str:
    """A run's key in the KV buckets."""
    return f"r.{token(key)}"


def split(
    batch: events_pb2.EventBatch, payload: bytes, limit_bytes: int
) -> list[tuple[int, int, bytes]]:
    """A batch as messages ``(first seq, last seq, bytes)`` of at most ``limit_bytes``, cut at
    event boundaries; the same batch always splits the same way, so a retry's messages carry
    the same ids."""
    last = batch.first_seq + len(batch.events) - 1
    if len(payload) <= limit_bytes - _OVERHEAD_BYTES or len(batch.events) <= 1:
        return [(batch.first_seq, last, payload)]
    parts: list[tuple[int, int, bytes]] = []
    budget = limit_bytes - _OVERHEAD_BYTES
    start, size = 0, 0
    for i, event in enumerate(batch.events):
        cost = event.ByteSize() + 8
        if i > start and size + cost > budget:
            parts.append(_slice(batch, start, i))
            start, size = i, 0
        size += cost
    parts.append(_slice(batch, start, len(batch.events)))
    return parts


def _slice(batch: events_pb2.EventBatch, start: int, end: int) -> tuple[int, int, bytes]:
    part = events_pb2.EventBatch()
    part.CopyFrom(batch)  # the client's reports and whatever fields come later
    del part.events[:]
    part.first_seq = batch.first_seq + start
    part.events.extend(batch.events[start:end])
    return part.first_seq, part.first_seq + end - start - 1, part.SerializeToString()
