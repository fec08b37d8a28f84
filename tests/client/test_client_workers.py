"""The client's background workers under an injected fault, in process: the artifact sender,
the spool recovery and the system-metrics sampler each restart (bridge/worker.py, RESTART),
say so in the log with the traceback, never raise into the caller, and lose nothing: the
artifact is delivered, the adopted spool delivered, sampling goes on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bridge.worker import Worker
from client_sdk import _recovery
from client_sdk._artifacts import ArtifactSender, Outcome
from client_sdk._recovery import Recovery
from client_sdk._staging import StagedArtifact
from client_sdk.config import WriterConfig
from client_sdk.spool.delivery import SpoolReport
from client_sdk.spool.finding import Found
from client_sdk.system_metrics import Sampler
from tests.support.procs import wait_until

pytestmark = pytest.mark.timeout(60)


class _Injected(RuntimeError):
    """The fault these tests inject."""


def _fails_first(times: int, then: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in that raises ``_Injected`` ``times`` times, then calls ``then``."""
    left = [times]

    def call(*args: Any, **kwargs: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise _Injected("injected fault")
        return then(*args, **kwargs)

    return call


def _quick(worker: Worker) -> None:
    worker.restart_pause_s = 0.01  # the pause is for a fault that repeats, not for tests


def _restart_logged(caplog: pytest.LogCaptureFixture, name: str) -> bool:
    return any(
        f"worker {name} failed; restarting it" in r.getMessage()
        and r.exc_info is not None
        and r.exc_info[0] is _Injected
        for r in caplog.records
    )


@pytest.fixture
def config(tmp_path: Path) -> WriterConfig:
    return WriterConfig(
        receiver="127.0.0.1:1", client_id="site-a", job="job", spool_dir=str(tmp_path)
    )


def test_the_artifact_sender_restarts_and_still_delivers(
    config: WriterConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sender = ArtifactSender(config)
    _quick(sender._worker)
    delivered: list[str] = []

    def deliver(item: StagedArtifact) -> Outcome:
        delivered.append(item.shown)
        sender.uploaded += 1
        return Outcome.DELIVERED

    sender._deliver = _fails_first(1, deliver)  # type: ignore[method-assign]
    source = tmp_path / "model.txt"
    source.write_text("weights")
    sender.stage_copy("run-1", source, "models")  # the caller is never told of the fault
    assert sender.flush(timeout_s=30)
    assert delivered == ["models/model.txt"]
    assert sender._worker.restarts == 1 and sender._worker.alive
    assert _restart_logged(caplog, "artifacts")
    assert sender.close(timeout_s=5) == 0
    assert not sender._worker.alive


class _Spool:
    """What recovery needs of an adopted spool."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.damage = ""
        self.closed: list[bool] = []

    def outstanding_events(self) -> int:
        return 7

    def close(self, *, delete: bool = True) -> bool:
        self.closed.append(delete)
        return delete


class _Delivery:
    """Delivers a spool whole (stands in for spool/delivery.py's)."""

    runs: ClassVar[list[str]] = []

    def __init__(self, spool: _Spool, *_args: object, **_kwargs: object) -> None:
        self.report = SpoolReport(str(spool.path))

    def run(self) -> SpoolReport:
        _Delivery.runs.append(self.report.name)
        self.report.events_delivered, self.report.complete = 7, True
        return self.report


def test_spool_recovery_restarts_and_delivers_the_spool(
    config: WriterConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spool = _Spool(tmp_path / "site-a-orphan.db")
    monkeypatch.setattr(_recovery, "adopt_orphans", lambda *a, **k: Found(adopted=[spool]))  # type: ignore[list-item]
    _Delivery.runs = []
    monkeypatch.setattr(_recovery, "Delivery", _fails_first(1, _Delivery))
    recovery = Recovery(config)
    _quick(recovery._worker)
    recovery.start()
    assert recovery.flush(timeout_s=30)
    assert recovery._worker.restarts == 1 and not recovery._worker.failure
    assert _restart_logged(caplog, "recovery")
    # Adopted once (a restart does not look again), delivered once, whole.
    assert _Delivery.runs == [str(spool.path)]
    assert spool.closed == [True]
    assert recovery.pending_events() == 0
    assert recovery.close(timeout_s=5) == 0


class _Host:
    """A host whose samples are numbered."""

    def __init__(self) -> None:
        self.taken = 0

    def sample(self) -> dict[str, float]:
        self.taken += 1
        return {"system/n": float(self.taken)}


def test_the_sampler_restarts_when_logging_a_sample_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = _Host()
    got: list[Mapping[str, float]] = []
    emit = _fails_first(1, lambda sample: bool(got.append(sample)) or True)
    sampler = Sampler(host, emit, 0.01)  # type: ignore[arg-type]
    _quick(sampler._worker)
    sampler.start()
    try:
        wait_until(lambda: len(got) >= 3, 30, what="samples after the restart")
        assert sampler.restarts == 1 and sampler.running
        assert _restart_logged(caplog, "system-metrics")
    finally:
        sampler.stop()
    assert not sampler.running
    assert not any(t.name == "trackbridge-system-metrics" for t in threading.enumerate())


def test_a_failing_host_sample_is_said_once_and_sampling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = _Host()
    host.sample = _fails_first(2, host.sample)  # type: ignore[method-assign]
    got: list[Mapping[str, float]] = []
    sampler = Sampler(host, lambda s: bool(got.append(s)) or True, 0.01)  # type: ignore[arg-type]
    sampler.start()
    try:
        wait_until(lambda: len(got) >= 2, 30, what="samples after the host's trouble")
    finally:
        sampler.stop()
    assert sampler.restarts == 0
    said = [r for r in caplog.records if r.name in ("bridge.worker", "client_sdk.system_metrics")]
    assert [r.getMessage() for r in said] == ["trackbridge: a system metrics sample failed"]
