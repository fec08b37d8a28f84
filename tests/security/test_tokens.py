"""Client tokens against a real receiver: none, wrong, revoked, another client's id, another
client's run; what the queue stores; the token commands; a Writer that holds a token."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.pb.v1 import ingest_pb2
from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
from tests.support.mlflow_reads import all_points, children_by_client, wait_for_children
from tests.support.procs import MlflowServer, ReceiverProcess, launch_receiver, wait_until
from tests.support.security import (
    GET_RUN,
    LEDGER,
    PUBLISH,
    TS,
    batch,
    bearer,
    call,
    issue_token,
    metric_event,
    no_secret_leaks,
    start_event,
    trackbridge,
    write_secret,
)

__all__ = ["no_secret_leaks"]
pytestmark = pytest.mark.usefixtures("no_secret_leaks")


@pytest.fixture(scope="module")
def tokened(
    tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer
) -> Iterator[tuple[ReceiverProcess, dict[str, str]]]:
    """A receiver whose token store had tokens for site-1 and site-2 before it started."""
    root = tmp_path_factory.mktemp("tokens")
    LEDGER.roots.add(root)
    data_dir = root / "receiver-data"
    tokens = {cid: issue_token(data_dir, cid) for cid in ("site-1", "site-2")}
    receiver = launch_receiver(root, mlflow_server.uri, data_dir=data_dir)
    yield receiver, tokens
    code = receiver.stop()
    assert code == 0, receiver.log_tail()
    assert not LEDGER.leaks()
    LEDGER.roots.discard(root)


@pytest.fixture
def channel(tokened: tuple[ReceiverProcess, dict[str, str]]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(tokened[0].address) as chan:
        grpc.channel_ready_future(chan).result(timeout=10)
        yield chan


@pytest.mark.timeout(120)
def test_a_call_without_a_valid_token_is_unauthenticated(
    channel: grpc.Channel, tokened: tuple[ReceiverProcess, dict[str, str]]
) -> None:
    receiver, tokens = tokened
    good = tokens["site-1"]
    token_id, secret = good.split(".", 1)
    cases = {
        "no token": (),
        "wrong secret": bearer(f"{token_id}.{secret[::-1]}"),
        "unknown token": bearer(f"tbt_000000000000.{secret}"),
        "not a token at all": bearer("hunter2-hunter2"),
        "not a bearer scheme": (("authorization", f"Basic {good}"),),
    }
    for case, metadata in cases.items():
        outcome = call(channel, PUBLISH, batch("site-1"), metadata)
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, (case, outcome)
        assert outcome.details and secret not in outcome.details, (case, outcome)
        query = ingest_pb2.RunQuery(client_id="site-1", run_key="r")
        assert call(channel, GET_RUN, query, metadata).code == grpc.StatusCode.UNAUTHENTICATED
    assert "token" in call(channel, PUBLISH, batch("site-1")).details
    # The right token passes; health needs none.
    assert call(channel, PUBLISH, batch("site-1"), bearer(good)).code == grpc.StatusCode.OK
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1
    assert receiver.alive()


@pytest.mark.timeout(120)
def test_a_client_writes_only_as_itself_and_only_to_its_own_runs(
    channel: grpc.Channel,
    tokened: tuple[ReceiverProcess, dict[str, str]],
    job: str,
    mlflow_client: Any,
) -> None:
    receiver, tokens = tokened
    site1, site2 = bearer(tokens["site-1"]), bearer(tokens["site-2"])
    # Another client's id: refused and logged, with who tried.
    outcome = call(channel, PUBLISH, batch("site-2", job), site1)
    assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, outcome
    assert "'site-1'" in outcome.details and "'site-2'" in outcome.details, outcome.details
    query = ingest_pb2.RunQuery(client_id="site-2", run_key=uuid.uuid4().hex)
    assert call(channel, GET_RUN, query, site1).code == grpc.StatusCode.PERMISSION_DENIED

    # Another client's run key names a run of the caller's own: site-1, writing as itself
    # under site-2's run key, never touches site-2's run (runs are keyed by client and key).
    run_key = uuid.uuid4().hex
    mine = call(channel, PUBLISH, batch("site-2", job, run_key=run_key), site2)
    assert mine.code == grpc.StatusCode.OK and mine.response.acked_seq == 2, mine
    intruder = batch(
        "site-1", job, run_key=run_key, events=[start_event(), metric_event(value=666.0)]
    )
    outcome = call(channel, PUBLISH, intruder, site1)
    assert outcome.code == grpc.StatusCode.OK and outcome.response.acked_seq == 2, outcome
    query = ingest_pb2.RunQuery(client_id="site-1", run_key=run_key)
    assert call(channel, GET_RUN, query, site1).response.acked_seq == 2
    query = ingest_pb2.RunQuery(client_id="site-2", run_key=run_key)
    assert call(channel, GET_RUN, query, site2).response.acked_seq == 2

    def logged() -> bool:
        return "claims client 'site-2'" in receiver.log_path.read_text()

    wait_until(logged, 30, what="the refusal in the receiver's log")

    # The queue stores each batch under the authenticated client and its run key.
    status = trackbridge("status", "--data-dir", str(receiver.data_dir), "--json")
    runs = {r["run_key"]: r for r in json.loads(status.stdout)["runs"]}
    assert runs[f"site-2/{run_key}"]["client_id"] == "site-2"
    assert runs[f"site-2/{run_key}"]["acked_seq"] == 2
    assert runs[f"site-1/{run_key}"]["client_id"] == "site-1"
    assert runs[f"site-1/{run_key}"]["acked_seq"] == 2

    def both() -> dict[str, Any] | None:
        runs = children_by_client(mlflow_client, job)
        points = {client: all_points(mlflow_client, run) for client, run in runs.items()}
        return points if len(points) == 2 and all(points.values()) else None

    points = wait_until(both, 30, what="both clients' runs and points in MLflow")
    assert points == {
        "site-1": {"m": [("m", 666.0, 0, TS)]},
        "site-2": {"m": [("m", 1.0, 0, TS)]},
    }


@pytest.mark.timeout(120)
def test_a_revoked_token_stops_working_at_once(
    channel: grpc.Channel, tokened: tuple[ReceiverProcess, dict[str, str]]
) -> None:
    receiver, _ = tokened
    token = issue_token(receiver.data_dir, "site-3")
    assert call(channel, PUBLISH, batch("site-3"), bearer(token)).code == grpc.StatusCode.OK
    token_id = token.split(".", 1)[0]

    listed = trackbridge("token", "list", "--data-dir", str(receiver.data_dir), "--json")
    rows = {row["token_id"]: row for row in json.loads(listed.stdout)}
    assert rows[token_id]["client_id"] == "site-3" and rows[token_id]["revoked_ms"] == 0
    assert (
        trackbridge("token", "revoke", token_id, "--data-dir", str(receiver.data_dir)).returncode
        == 0
    )

    outcome = call(channel, PUBLISH, batch("site-3"), bearer(token))
    assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, outcome
    assert "revoked" in outcome.details
    again = trackbridge("token", "revoke", token_id, "--data-dir", str(receiver.data_dir))
    assert again.returncode == 1, "nothing left to revoke"
    table = trackbridge("token", "list", "--data-dir", str(receiver.data_dir)).stdout
    assert "site-3" in table and "revoked" in table

    # Revoking every token of a client; the others keep working.
    other = issue_token(receiver.data_dir, "site-4")
    by_client = trackbridge(
        "token", "revoke", "--client", "site-4", "--data-dir", str(receiver.data_dir)
    )
    assert by_client.returncode == 0 and "revoked 1" in by_client.stdout
    assert (
        call(channel, PUBLISH, batch("site-4"), bearer(other)).code
        == grpc.StatusCode.UNAUTHENTICATED
    )


@pytest.mark.timeout(180)
def test_a_writer_with_its_token_delivers_and_one_without_keeps_its_events(
    tmp_path: Path,
    tokened: tuple[ReceiverProcess, dict[str, str]],
    mlflow_client: Any,
    job: str,
) -> None:
    receiver, tokens = tokened
    token_file = write_secret(tmp_path / "site-1-token.secret", tokens["site-1"])
    config = WriterConfig.resolve(
        receiver.address, "site-1", job, spool_dir=str(tmp_path / "spool"),
        env={"TRACKBRIDGE_TOKEN_FILE": str(token_file)},
    )  # fmt: skip
    assert config.token == tokens["site-1"]
    assert tokens["site-1"] not in repr(config) and "token='***'" in repr(config)
    with Writer(config=config) as writer:
        writer.start_run()
        for step in range(50):
            writer.log_metric("loss", 1.0 / (step + 1), step=step, timestamp=TS + step)
        assert writer.flush(timeout_s=30)

    tokenless = Writer(
        config=WriterConfig(
            receiver=receiver.address, client_id="site-1", job=job,
            spool_dir=str(tmp_path / "spool-nt"), retry_max_backoff_s=0.2,
        )
    )  # fmt: skip
    tokenless.start_run()
    tokenless.log_metric("loss", 0.5, step=0, timestamp=TS)
    assert not tokenless.flush(timeout_s=3), "refused, so not acknowledged"
    assert tokenless.pending_events == 2, "kept, not dropped"
    assert "requires a client token" in receiver.log_path.read_text()
    tokenless.close(timeout_s=1)

    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=60)
    assert children_by_client(mlflow_client, job)["site-1"].info.run_id == run.info.run_id
    assert len(all_points(mlflow_client, run)["loss"]) == 50
