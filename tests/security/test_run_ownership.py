"""One identity across receivers: a client writes only runs it owns, on every receiver.

Three real receivers on one real MLflow server share one token store (the tokens of clients A
and B are valid on all three). B logs through a proxy that sends it to receiver 1, then (when
receiver 1 stops) to receiver 2, then to receiver 3, which has never seen B. A, with its own
valid token, publishes to receiver 2 under B's run key (read from MLflow, as anyone can). A
bystander in another job logs through receiver 3 the whole time. Afterwards MLflow holds
exactly B's points in B's run, A's point in A's own run, and every bystander point.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from bridge.pb.v1 import artifacts_pb2, artifacts_pb2_grpc, events_pb2, ingest_pb2
from client_sdk.config import WriterConfig
from client_sdk.writer import Writer
from tests.support.bystander import start_bystander
from tests.support.compat import receiver_idle
from tests.support.faults import TcpProxy
from tests.support.mlflow_reads import (
    TAG_CLIENT_ID,
    TAG_RUN_KEY,
    all_points,
    child_runs,
    job_runs,
)
from tests.support.procs import wait_until
from tests.support.security import (
    GET_RUN,
    PUBLISH,
    TS,
    batch,
    bearer,
    call,
    issue_token,
    metric_event,
    no_secret_leaks,
    write_secret,
)

__all__ = ["no_secret_leaks"]
pytestmark = pytest.mark.usefixtures("no_secret_leaks")


def _points(start: int, stop: int) -> list[tuple[str, float, int, int]]:
    return [("x", float(i), i, TS + i) for i in range(start, stop)]


def _log(writer: Writer, start: int, stop: int) -> None:
    for i in range(start, stop):
        writer.log_metric("x", float(i), step=i, timestamp=TS + i)


def _data_dirs(root: Path, count: int, clients: list[str]) -> tuple[list[Path], dict[str, str]]:
    """``count`` receiver data directories sharing one token store with tokens for
    ``clients`` (issued once, then the store copied: the tokens are valid on every one)."""
    issuer = root / "issuer"
    tokens = {client: issue_token(issuer, client) for client in clients}
    dirs = []
    for i in range(count):
        data_dir = root / f"receiver-{i + 1}"
        data_dir.mkdir(mode=0o700)
        for path in issuer.glob("tokens.db*"):
            shutil.copy2(path, data_dir / path.name)
        dirs.append(data_dir)
    return dirs, tokens


def _file_chunks(run_key: str, data: bytes) -> list[artifacts_pb2.ArtifactChunk]:
    header = artifacts_pb2.ArtifactHeader(
        client_id="site-a",
        job="unused-job",
        run_key=run_key,
        upload_id=uuid.uuid4().hex,
        file_name="stolen.txt",
        size=len(data),
    )
    return [
        artifacts_pb2.ArtifactChunk(header=header),
        artifacts_pb2.ArtifactChunk(
            data=artifacts_pb2.ArtifactData(offset=0, data=data, crc32=zlib.crc32(data))
        ),
        artifacts_pb2.ArtifactChunk(
            trailer=artifacts_pb2.ArtifactTrailer(sha256=hashlib.sha256(data).hexdigest())
        ),
    ]


def _start(name: str) -> events_pb2.Event:
    event = events_pb2.Event()
    event.run_start.run_name = name
    return event


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_client_cannot_write_into_another_clients_run_through_any_receiver(
    start_receiver: Any, mlflow_client: Any, job: str, tmp_path: Path
) -> None:
    root = tmp_path / "fleet"
    root.mkdir()
    bystander_id = f"bystander-{uuid.uuid4().hex[:8]}"
    dirs, tokens = _data_dirs(root, 3, ["site-a", "site-b", bystander_id])
    r1, r2, r3 = (start_receiver(data_dir=d) for d in dirs)
    bystander = start_bystander(
        r3.address,
        tmp_path,
        client_id=bystander_id,
        token_file=write_secret(tmp_path / "bystander.secret", tokens[bystander_id]),
        points=1500,
        rate=100.0,
    )
    proxy = TcpProxy(r1.port)
    writer = Writer(
        config=WriterConfig(
            receiver=proxy.address,
            client_id="site-b",
            job=job,
            spool_dir=str(tmp_path / "spool-b"),
            token=tokens["site-b"],
        )
    )
    try:
        # B's run starts through receiver 1; anyone reading MLflow sees its run key.
        writer.start_run("b-run")
        _log(writer, 0, 100)
        assert writer.flush(timeout_s=60)

        def b_run() -> Any:
            runs = [
                r
                for r in child_runs(job_runs(mlflow_client, job))
                if r.data.tags.get(TAG_CLIENT_ID) == "site-b"
            ]
            return runs[0] if runs else None

        b_key = wait_until(b_run, 60, what="B's run in MLflow").data.tags[TAG_RUN_KEY]
        site_a = bearer(tokens["site-a"])
        with grpc.insecure_channel(r2.address) as channel:
            # A, with its own valid token, under B's run key: stored as A's own run.
            hijack = batch(
                "site-a",
                job,
                run_key=b_key,
                events=[_start("hijack"), metric_event("x", 666.0, step=1000)],
            )
            outcome = call(channel, PUBLISH, hijack, site_a)
            assert outcome.code == grpc.StatusCode.OK, outcome
            # A's token never writes as B.
            as_b = batch("site-b", job, run_key=b_key, first_seq=101, events=[metric_event()])
            outcome = call(channel, PUBLISH, as_b, site_a)
            assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, outcome
            query = ingest_pb2.RunQuery(client_id="site-a", run_key=b_key)
            assert call(channel, GET_RUN, query, site_a).response.acked_seq == 2  # its own
            # Files address runs by run key too: this one goes to A's own run.
            ack = artifacts_pb2_grpc.ArtifactsStub(channel).Upload(
                iter(_file_chunks(b_key, b"not B's file")), metadata=site_a, timeout=30
            )
            assert ack.size == len(b"not B's file")

        # Receiver 1 goes away; B fails over to receiver 2, which has seen A's batches.
        assert r1.stop() == 0, r1.log_tail()
        proxy.set_upstream(r2.port)
        _log(writer, 100, 200)
        assert writer.flush(timeout_s=60), "receiver 2 must take B's own batches"

        # Then to receiver 3, which never saw B: it finds B's run by B's tags alone.
        wait_until(lambda: receiver_idle(r2.data_dir), 60, what="receiver 2 to drain")
        assert r2.stop() == 0, r2.log_tail()
        proxy.set_upstream(r3.port)
        _log(writer, 200, 300)
        writer.end_run("FINISHED")
        assert writer.close(timeout_s=60) == 0
    except BaseException:
        bystander.stop()
        raise
    finally:
        writer.close(timeout_s=5)
        proxy.close()

    def settled() -> list[Any] | None:
        runs = child_runs(job_runs(mlflow_client, job))
        b_runs = [r for r in runs if r.data.tags.get(TAG_CLIENT_ID) == "site-b"]
        done = len(b_runs) == 1 and b_runs[0].info.status == "FINISHED"
        if done and len(all_points(mlflow_client, b_runs[0]).get("x", [])) >= 300:
            return runs
        return None

    runs = wait_until(settled, 90, what="B's finished run with all its points")
    by_client: dict[str, list[Any]] = {}
    for run in runs:
        by_client.setdefault(run.data.tags.get(TAG_CLIENT_ID, ""), []).append(run)
    assert sorted(by_client) == ["site-a", "site-b"], sorted(by_client)
    (b,) = by_client["site-b"]
    assert b.info.run_name == "b-run"
    assert b.data.tags[TAG_RUN_KEY] == b_key
    assert all_points(mlflow_client, b) == {"x": _points(0, 300)}
    (a,) = by_client["site-a"]
    assert (a.data.tags[TAG_RUN_KEY], a.info.run_name) == (b_key, "hijack")
    assert all_points(mlflow_client, a) == {"x": [("x", 666.0, 1000, TS + 1000)]}
    assert [f.path for f in mlflow_client.list_artifacts(a.info.run_id)] == ["stolen.txt"]
    assert mlflow_client.list_artifacts(b.info.run_id) == []
    bystander.assert_delivered(mlflow_client)
