"""Fleet mode's pure parts: the ``--queue`` URL, names in JetStream, splitting a batch."""

from __future__ import annotations

import pytest

from bridge.pb.v1 import events_pb2
from server.config import ReceiverConfig
from server.fleet.config import FleetConfig, is_fleet_url, parse_queue_url
from server.fleet.subjects import msg_id, partition, split, subject


def test_queue_url_names_every_server_and_defaults_to_three_copies_for_a_cluster() -> None:
    cfg = parse_queue_url("nats://10.0.0.1:4222,10.0.0.2:4222,nats-2.nats:4222")
    assert cfg.servers == (
        "nats://10.0.0.1:4222",
        "nats://10.0.0.2:4222",
        "nats://nats-2.nats:4222",
    )
    assert (cfg.replicas, cfg.partitions, cfg.ack_wait_s) == (3, 16, 30.0)
    assert parse_queue_url("nats://127.0.0.1:4222").replicas == 1


def test_queue_url_options() -> None:
    cfg = parse_queue_url("nats://a:1,b:2,c:3?partitions=4&ack_wait_s=5&replicas=1")
    assert (cfg.replicas, cfg.partitions, cfg.ack_wait_s) == (1, 4, 5.0)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("nats://", "is not host:port"),
        ("nats://host", "is not host:port"),
        ("nats://host:99999", "is not host:port"),
        ("nats://h:1?colour=red", "unknown option 'colour'"),
        ("nats://h:1?replicas=2", "replicas must be 1, 3 or 5"),
        ("nats://h:1?partitions=0", "partitions must be 1..256"),
        ("nats://h:1?partitions=many", "a number was expected"),
        ("nats://h:1?max_bytes=65536", "max_bytes must be at least 1048576"),
        ("kafka://h:1", "must be sqlite or nats://"),
    ],
)
def test_bad_queue_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_queue_url(url)


def test_the_receiver_config_takes_the_queue_from_the_flag_or_the_environment() -> None:
    assert ReceiverConfig.resolve(env={}).fleet is None
    assert ReceiverConfig.resolve(queue="sqlite", env={}).fleet is None
    from_env = ReceiverConfig.resolve(env={"TRACKBRIDGE_QUEUE": "nats://127.0.0.1:4222"})
    assert from_env.fleet == FleetConfig(servers=("nats://127.0.0.1:4222",), replicas=1)
    assert is_fleet_url("nats://x:1") and not is_fleet_url("sqlite")


def test_cross_client_aggregates_need_the_embedded_queue() -> None:
    from server.aggregate.config import AggregateConfig

    with pytest.raises(ValueError, match="--aggregate needs the embedded queue"):
        ReceiverConfig.resolve(
            queue="nats://127.0.0.1:4222", aggregate=AggregateConfig(("eval/*",)), env={}
        )


def test_a_fleet_receiver_is_never_alone() -> None:
    """A run may move between a fleet's flushers: each creates runs as one of several."""
    with pytest.raises(ValueError, match="--alone cannot be used with --queue"):
        ReceiverConfig.resolve(queue="nats://127.0.0.1:4222", alone=True, env={})


def test_names_in_jetstream_never_hold_the_raw_key_and_stay_put() -> None:
    key = "site 1.* >/" + "x" * 5000  # what a subject may not hold, and far over 4 KiB
    name = subject(key, 16)
    assert len(name) < 64 and " " not in name and "*" not in name and ">" not in name
    assert name == subject(key, 16)
    assert name.split(".")[2] == str(partition(key, 16))
    assert {partition(f"c/{i}", 16) for i in range(200)} == set(range(16))
    assert msg_id(key, 1, 10) == msg_id(key, 1, 10) != msg_id(key, 1, 11)
    assert msg_id(key, 1, 10) != msg_id(key + "y", 1, 10)


def _batch(events: int, size: int) -> events_pb2.EventBatch:
    batch = events_pb2.EventBatch(client_id="c", job="j", run_key="r", first_seq=41)
    batch.client_pending_events = 7
    for i in range(events):
        event = batch.events.add()
        event.param.key = f"p{i}"
        event.param.value = "v" * size
    return batch


def test_a_small_batch_is_one_message_of_its_own_bytes() -> None:
    batch = _batch(3, 10)
    payload = batch.SerializeToString()
    assert split(batch, payload, 1 << 20) == [(41, 43, payload)]


def test_a_big_batch_splits_at_event_boundaries_the_same_way_every_time() -> None:
    batch = _batch(40, 100_000)  # about 4 MB
    payload = batch.SerializeToString()
    parts = split(batch, payload, 1 << 20)
    assert len(parts) >= 4
    assert parts == split(batch, payload, 1 << 20)  # a retry's messages carry the same ids
    seqs, keys = [], []
    for first, last, data in parts:
        assert len(data) <= (1 << 20)
        part = events_pb2.EventBatch.FromString(data)
        assert (part.first_seq, part.first_seq + len(part.events) - 1) == (first, last)
        assert (part.client_id, part.job, part.run_key) == ("c", "j", "r")
        assert part.client_pending_events == 7
        seqs.extend(range(first, last + 1))
        keys.extend(e.param.key for e in part.events)
    assert seqs == list(range(41, 81))
    assert keys == [f"p{i}" for i in range(40)]


def test_one_event_over_the_limit_goes_alone() -> None:
    batch = _batch(1, 3 << 20)
    payload = batch.SerializeToString()
    assert split(batch, payload, 1 << 20) == [(41, 41, payload)]
