"""A lone surrogate (what ``os.fsdecode`` makes of a file name that is not UTF-8) in a param or
tag is refused at the call, as MLflow refuses it, never dropped later by the sender; and what
the sender does drop is counted in ``dropped_events``."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from mlflow.protos.service_pb2 import LogParam, SetTag

from bridge.errors import MlflowException
from bridge.events import Param
from client_sdk.writer import Writer

pytestmark = pytest.mark.timeout(120)

NAME = os.fsdecode(b"checkpoint-\xff.pt")
"""An undecodable file name, as Python hands it over: ``checkpoint-\\udcff.pt``."""


def _mlflow_says(message: type, **fields: str) -> str:
    """What MLflow's client raises for the request it would send its tracking server (it
    builds this protobuf message first; its SQL store raises the same words as an
    ``MlflowException`` with INTERNAL_ERROR)."""
    with pytest.raises(UnicodeEncodeError) as excinfo:
        message(**fields)
    return str(excinfo.value)


def _refused(call: Callable[[], object]) -> MlflowException:
    with pytest.raises(MlflowException) as excinfo:
        call()
    assert type(excinfo.value).__name__ == "MlflowException"
    return excinfo.value


def test_a_lone_surrogate_is_refused_at_the_call_in_mlflows_words() -> None:
    param = _mlflow_says(LogParam, key="file", value=NAME)
    tag = _mlflow_says(SetTag, key="file", value=NAME)
    assert "surrogates not allowed" in param
    writer = Writer(receiver="127.0.0.1:9", client_id="site-1", job="j")
    try:
        run = writer.start_run()
        refused = _refused(lambda: writer.log_param("file", NAME))
        assert (refused.message, refused.error_code) == (param, "INTERNAL_ERROR")
        assert _refused(lambda: writer.set_tag("file", NAME)).message == tag
        assert _refused(lambda: writer.log_params({"ok": "1", "file": NAME})).message == param
        assert _refused(lambda: writer.set_tags({"file": NAME})).message == tag
        assert _refused(lambda: writer.start_run(tags={"file": NAME})).message == tag
        assert _refused(lambda: writer.start_run(run_name=NAME)).message
        _refused(lambda: writer.log_param(NAME, "1"))  # a key: MLflow's name rule refuses it
        assert writer.active_run is run
        writer.log_param("file", os.fsdecode(b"checkpoint.pt"))
    finally:
        result = writer.close(timeout_s=0.5)
    assert (result, result.dropped_events) == (3, 0)  # the start, the good param, the end


def test_what_the_sender_cannot_encode_is_counted_as_dropped() -> None:
    writer = Writer(receiver="127.0.0.1:9", client_id="site-1", job="j")
    try:
        run = writer.start_run()
        # Past the call's checks (as a caller of the internals could): the sender drops it.
        writer._buffer.append((run.run_key, Param("file", NAME)))
        writer.log_param("after", "1")
    finally:
        result = writer.close(timeout_s=1.0)
    assert result.dropped_events == 1
    assert result.undelivered_events == 3  # the start, the good param, the end
