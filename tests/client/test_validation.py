"""Bad input raises MLflow's error at the call site, with MLflow's wording, and sends nothing."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from mlflow.exceptions import MlflowException as RealMlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    _validate_experiment_name,
    _validate_metric,
    _validate_metric_name,
    _validate_param,
    _validate_param_name,
    _validate_tag,
    _validate_tag_name,
)

from bridge import validation
from bridge.errors import MlflowException
from tests.support.mlflow_reads import all_points, user_tags, wait_for_children

TS = 1_700_000_400_000


def _mlflow_message(fn: Any, *args: Any) -> str | None:
    """The message real MLflow raises for the same input, or None when it accepts it."""
    try:
        fn(*args)
    except RealMlflowException as exc:
        assert exc.error_code == "INVALID_PARAMETER_VALUE"
        return str(exc.message)
    return None


def _ours(fn: Any, *args: Any, **kwargs: Any) -> str | None:
    try:
        fn(*args, **kwargs)
    except MlflowException as exc:
        assert type(exc).__name__ == "MlflowException"
        assert exc.error_code == "INVALID_PARAMETER_VALUE"
        return exc.message
    return None


def _raises_like_mlflow(excinfo: pytest.ExceptionInfo[MlflowException]) -> MlflowException:
    exc = excinfo.value
    assert type(exc).__name__ == "MlflowException"
    assert exc.error_code == "INVALID_PARAMETER_VALUE"
    assert str(exc) == exc.message
    return exc


# -- the Writer at the call site -----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_bad_calls_raise_at_the_call_site_and_send_nothing(
    receiver: Any, make_writer: Any, mlflow_client: Any, mlflow_server: Any, job: str
) -> None:
    writer = make_writer(receiver.address, "validation-client", job)
    writer.start_run("validation")
    writer.log_metric("good", 1.0, step=0, timestamp=TS)
    writer.log_param("lr", "0.1")
    writer.set_tag("ok", "yes")

    # invalid characters, with MLflow's exact wording
    with pytest.raises(MlflowException) as excinfo:
        writer.log_metric("bad key!", 1.0, step=1, timestamp=TS)
    assert _raises_like_mlflow(excinfo).message == _mlflow_message(
        _validate_metric_name, "bad key!"
    )
    with pytest.raises(MlflowException) as excinfo:
        writer.log_param("bad key!", "1")
    assert _raises_like_mlflow(excinfo).message == _mlflow_message(_validate_param_name, "bad key!")
    with pytest.raises(MlflowException) as excinfo:
        writer.set_tag("bad key!", "1")
    assert _raises_like_mlflow(excinfo).message == _mlflow_message(_validate_tag_name, "bad key!")
    with pytest.raises(MlflowException) as excinfo:
        writer.log_metrics({"fine": 1.0, "bad key!": 2.0}, step=1, timestamp=TS)
    _raises_like_mlflow(excinfo)

    # a path trick
    with pytest.raises(MlflowException) as excinfo:
        writer.log_metric("../x", 1.0, step=1, timestamp=TS)
    assert _raises_like_mlflow(excinfo).message == _mlflow_message(_validate_metric_name, "../x")
    with pytest.raises(MlflowException) as excinfo:
        writer.log_param("../x", "1")
    assert _raises_like_mlflow(excinfo).message == _mlflow_message(_validate_param_name, "../x")

    # an over-long key
    long_key = "k" * 251
    with pytest.raises(MlflowException) as excinfo:
        writer.log_metric(long_key, 1.0, step=1, timestamp=TS)
    assert _raises_like_mlflow(excinfo).message == _mlflow_message(
        _validate_metric, long_key, 1.0, TS, 1
    )
    with pytest.raises(MlflowException) as excinfo:
        writer.log_param(long_key, "1")
    assert _raises_like_mlflow(excinfo).message == _mlflow_message(_validate_param, long_key, "1")
    with pytest.raises(MlflowException) as excinfo:
        writer.set_tag(long_key, "1")
    assert _raises_like_mlflow(excinfo).message == _mlflow_message(_validate_tag, long_key, "1")

    # non-numeric values
    for value in ("abc", None, True):
        with pytest.raises(MlflowException) as excinfo:
            writer.log_metric("good", value, step=1, timestamp=TS)  # type: ignore[arg-type]
        assert _raises_like_mlflow(excinfo).message == _mlflow_message(
            _validate_metric, "good", value, TS, 1
        ), value
        with pytest.raises(MlflowException):
            writer.log_metrics({"good": value}, step=1, timestamp=TS)  # type: ignore[dict-item]

    writer.log_metric("good", 2.0, step=1, timestamp=TS + 1)

    # a changed param, worded as the MLflow server words it (its first paragraph)
    run_id = writer.run_id(timeout_s=30)
    assert run_id, "the receiver should report the MLflow run id"
    with pytest.raises(MlflowException) as excinfo:
        writer.log_param("lr", "0.2")
    ours = _raises_like_mlflow(excinfo).message
    assert ours == _server_message_for_changed_param(mlflow_server.uri, run_id)
    with pytest.raises(MlflowException):
        writer.log_params({"other": "1", "lr": 0.2})  # all are checked before any is logged
    writer.log_param("lr", "0.1")  # the same value again is fine

    writer.log_metric("good", 3.0, step=2, timestamp=TS + 2)
    writer.end_run("FINISHED")
    assert writer.close(timeout_s=30) == 0

    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=30)
    assert run.info.run_id == run_id
    assert run.info.status == "FINISHED"
    assert all_points(mlflow_client, run) == {
        "good": [("good", 1.0, 0, TS), ("good", 2.0, 1, TS + 1), ("good", 3.0, 2, TS + 2)]
    }
    assert run.data.params == {"lr": "0.1"}
    assert user_tags(run) == {"ok": "yes"}


def _server_message_for_changed_param(uri: str, our_run_id: str) -> str:
    """What the real MLflow server says when a param changes, for a run with our run's id."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(f"changed-param-reference-{our_run_id}")
    reference = client.create_run(experiment_id).info.run_id
    client.log_param(reference, "lr", "0.1")
    with pytest.raises(RealMlflowException) as excinfo:
        client.log_param(reference, "lr", "0.2")
    text = str(excinfo.value.message)
    prefix = "INVALID_PARAMETER_VALUE: "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    return text.split("\n\n")[0].replace(reference, our_run_id)


@pytest.mark.timeout(120)
def test_out_of_range_steps_and_timestamps_raise_at_the_call_site(
    receiver: Any, make_writer: Any, mlflow_client: Any, job: str
) -> None:
    """Integers a 64-bit step or a non-negative timestamp cannot hold are bad input too."""
    writer = make_writer(receiver.address, "range-client", job)
    writer.start_run("ranges")
    writer.log_metric("good", 1.0, step=0, timestamp=TS)
    bad = [
        {"step": 2**63, "timestamp": TS},
        {"step": -(2**63) - 1, "timestamp": TS},
        {"step": 1, "timestamp": -1},
        {"step": 1, "timestamp": 2**63},
    ]
    accepted = []
    for kwargs in bad:
        try:
            writer.log_metric("good", 5.0, **kwargs)
        except MlflowException as exc:
            assert exc.error_code == "INVALID_PARAMETER_VALUE"
        else:
            accepted.append(kwargs)
    assert accepted == [], "log_metric accepted out-of-range integers"
    with pytest.raises(MlflowException) as excinfo:
        writer.log_metric("good", 5.0, step=1, timestamp=-1)
    assert excinfo.value.message == _mlflow_message(_validate_metric, "good", 5.0, -1, 1)

    writer.log_metric("good", 2.0, step=1, timestamp=TS + 1)
    writer.end_run("FINISHED")
    assert writer.close(timeout_s=30) == 0

    (run,) = wait_for_children(mlflow_client, job, 1, timeout_s=30)
    assert run.info.run_name == "ranges"
    assert all_points(mlflow_client, run) == {
        "good": [("good", 1.0, 0, TS), ("good", 2.0, 1, TS + 1)]
    }


# -- bridge.validation against mlflow.utils.validation -------------------------------------------

NAMES = [
    "loss",
    "lr/group.0",
    "a b:c-d_e.f",
    "ünïcödé",
    "k" * 250,
    "k" * 251,
    "bad key!",
    "semi;colon",
    "../x",
    "a/../b",
    "a//b",
    "a/./b",
    "/abs",
    "trailing/",
    ".",
    "..",
    "",
]


@pytest.mark.parametrize("name", NAMES)
def test_metric_names_like_mlflow(name: str) -> None:
    expected = _mlflow_message(_validate_metric, name, 1.0, TS, 0)
    assert _ours(validation.validate_metric_key, name) == expected
    if expected is None:
        assert validation.validate_metric_key(name) == name


def test_metric_name_none_like_mlflow() -> None:
    assert _ours(validation.validate_metric_key, None) == _mlflow_message(
        _validate_metric_name, None
    )


@pytest.mark.parametrize("name", NAMES)
def test_param_names_like_mlflow(name: str) -> None:
    assert _ours(validation.validate_param, name, "v") == _mlflow_message(
        _validate_param, name, "v"
    )


@pytest.mark.parametrize("name", NAMES)
def test_tag_names_like_mlflow(name: str) -> None:
    assert _ours(validation.validate_tag, name, "v") == _mlflow_message(_validate_tag, name, "v")


def test_long_param_and_tag_values_are_truncated_like_mlflow() -> None:
    assert validation.validate_param("p", "v" * 6001) == _validate_param("p", "v" * 6001).value
    assert validation.validate_param("p", "v" * 6000) == "v" * 6000
    assert validation.validate_tag("t", "v" * 8001) == _validate_tag("t", "v" * 8001).value
    assert validation.validate_tag("t", "v" * 8000) == "v" * 8000
    assert len(validation.validate_tag("t", "v" * 8001)) == 8000


def test_long_values_are_refused_where_truncation_is_off() -> None:
    assert "6000" in (_ours(validation.validate_param, "p", "v" * 6001, truncate=False) or "")
    assert "8000" in (_ours(validation.validate_tag, "t", "v" * 8001, truncate=False) or "")


@pytest.mark.parametrize(
    "value",
    [1, 1.5, -0.0, float("nan"), float("inf"), np.float64(2.5), np.int64(3), np.float32(0.5)],
)
def test_numeric_metric_values_are_accepted_like_mlflow(value: object) -> None:
    assert _mlflow_message(_validate_metric, "k", value, TS, 0) is None
    result = validation.validate_metric_value("k", value, TS)
    assert isinstance(result, float)
    expected = float(value)  # type: ignore[arg-type]
    assert result == expected or (math.isnan(result) and math.isnan(expected))


@pytest.mark.parametrize("value", ["abc", "1.5", None, True, False, [1.0], {"v": 1}])
def test_non_numeric_metric_values_are_refused_like_mlflow(value: object) -> None:
    expected = _mlflow_message(_validate_metric, "k", value, TS, 0)
    assert expected is not None
    assert _ours(validation.validate_metric_value, "k", value, TS) == expected


@pytest.mark.parametrize(
    ("step", "timestamp"),
    [(0, -1), (0, "soon"), ("one", TS), (None, TS), (0, None)],
)
def test_bad_steps_and_timestamps_like_mlflow(step: object, timestamp: object) -> None:
    expected = _mlflow_message(_validate_metric, "k", 1.0, timestamp, step)
    assert expected is not None
    assert _ours(validation.validate_step_and_timestamp, "k", 1.0, step, timestamp) == expected


@pytest.mark.parametrize(
    ("step", "timestamp"),
    [(2**63, TS), (-(2**63) - 1, TS), (0, 2**63), (1.5, TS), (0, 1.5), (True, TS), (0, True)],
)
def test_steps_and_timestamps_must_be_64_bit_integers(step: object, timestamp: object) -> None:
    assert _ours(validation.validate_step_and_timestamp, "k", 1.0, step, timestamp) is not None


@pytest.mark.parametrize(
    ("step", "timestamp"), [(0, 0), (2**63 - 1, 2**63 - 1), (-(2**63), TS), (np.int64(5), TS)]
)
def test_64_bit_steps_and_timestamps_are_accepted(step: object, timestamp: object) -> None:
    assert _ours(validation.validate_step_and_timestamp, "k", 1.0, step, timestamp) is None


def test_changing_a_param_is_refused_with_mlflows_words() -> None:
    validation.check_param_unchanged({"lr": "0.1"}, "lr", "0.1", "run1")  # same value: fine
    validation.check_param_unchanged({}, "lr", "0.2", "run1")  # first value: fine
    message = _ours(validation.check_param_unchanged, {"lr": "0.1"}, "lr", "0.2", "run1")
    assert message == (
        "Changing param values is not allowed. Param with key='lr' was already logged with "
        "value='0.1' for run ID='run1'. Attempted logging new value '0.2'."
    )


def test_invalid_value_message_like_mlflow() -> None:
    from mlflow.utils.validation import invalid_value

    for value in ("x", 1, None, True, [1, "a"], {"b": 1, "a": 2}):
        assert validation.invalid_value("p", value) == invalid_value("p", value)
        assert validation.invalid_value("p", value, "why") == invalid_value("p", value, "why")


# -- experiment names and what one event can carry ------------------------------------------------

EXPERIMENT_NAMES = ["", "e" * 500, "e" * 501, " ", "a/b: c", "ünïcode"]


@pytest.mark.parametrize("name", EXPERIMENT_NAMES)
def test_experiment_names_like_mlflow(name: str) -> None:
    assert _ours(validation.validate_experiment_name, name) == _mlflow_message(
        _validate_experiment_name, name
    )


@pytest.mark.timeout(60)
def test_writer_refuses_what_mlflow_or_a_message_could_not_take_and_queues_nothing() -> None:
    from bridge.limits import MAX_EVENT_BYTES
    from client_sdk.writer import Writer

    writer = Writer(receiver="127.0.0.1:9", client_id="site-1", job="j")
    try:
        for bad in ("", "e" * 501):
            with pytest.raises(MlflowException) as excinfo:
                writer.start_run(experiment=bad)
            assert _raises_like_mlflow(excinfo).message == _mlflow_message(
                _validate_experiment_name, bad
            )
        with pytest.raises(MlflowException, match=f"at most {MAX_EVENT_BYTES} bytes per event"):
            writer.start_run(description="d" * MAX_EVENT_BYTES)
        with pytest.raises(MlflowException, match="per event"):
            writer.start_run(tags={f"t{i}": "v" * 8000 for i in range(200)})
        assert writer.active_run is None
        run = writer.start_run(experiment="e" * 500, description="d" * 100_000)
        assert writer.active_run is run
    finally:
        assert writer.close(timeout_s=0.5) == 2  # the good start and its end: nothing else


@pytest.mark.timeout(120)
def test_fluent_experiment_names_raise_what_mlflow_raises(
    mlflow_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real mlflow against a tracking server, and the import swap without a round trip."""
    import mlflow

    import client_sdk.mlflow as bridged

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    calls = {
        "set_experiment('')": lambda m: m.set_experiment(""),
        "set_experiment(501)": lambda m: m.set_experiment("s" * 501),
        "create_experiment('')": lambda m: m.create_experiment(""),
        "create_experiment(501)": lambda m: m.create_experiment("c" * 501),
    }
    for label, call in calls.items():
        outcomes = []
        for module in (mlflow, bridged):
            with pytest.raises(Exception) as excinfo:
                call(module)
            exc = excinfo.value
            outcomes.append((type(exc).__name__, getattr(exc, "error_code", None), str(exc)))
        assert outcomes[0] == outcomes[1], label
        assert outcomes[0][1] == "INVALID_PARAMETER_VALUE", label
