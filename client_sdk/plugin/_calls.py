"""How the zero-code store reaches the receiver's Tracking service: MLflow's request messages
out, MLflow's response messages back, MLflow's errors raised as its REST client raises them,
and trackbridge artifact addresses (with this client's receiver) put into what comes back."""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.message import Message
from mlflow.entities import Experiment, Run
from mlflow.entities.logged_model import LoggedModel
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED, TEMPORARILY_UNAVAILABLE

from client_sdk._compat.addressing import SCHEME
from client_sdk._compat.relay import RelayError
from client_sdk._compat.session import Session

M = TypeVar("M", bound=Message)

GENAI_REASON = (
    "trackbridge carries training runs, experiments, metrics, artifacts, logged models and the"
    " model registry; traces, assessments, scorers, evaluation datasets, prompts, the AI"
    " gateway and the MCP registry are not carried: use an MLflow tracking server for them"
)


class Unreachable(MlflowException):
    """The receiver (or its MLflow) could not be reached; callers may fall back."""


def call(
    session: Session, request: Message, response: type[M], timeout_s: float | None = None
) -> M:
    """Sends one MLflow call through the receiver and parses MLflow's answer.

    Raises:
        RestException: MLflow (or the receiver's scope) refused it, with MLflow's error code.
        Unreachable: The receiver did not answer.
    """
    try:
        data = session.call(request.DESCRIPTOR.full_name, request.SerializeToString(), timeout_s)
    except RelayError as exc:
        raise error(exc, session) from None
    return response.FromString(data)


_PASSING = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})
"""MLflow errors that say "not now" (the receiver's MLflow is down or busy), not "no"."""


def error(exc: RelayError, session: Session) -> MlflowException:
    """A relay failure as MLflow raises it."""
    if exc.reached and exc.error_code not in _PASSING:
        return RestException({"error_code": exc.error_code, "message": exc.message})  # type: ignore[no-untyped-call]
    if exc.reached:
        return Unreachable(
            f"the MLflow behind the trackbridge receiver at {session.config.receiver} could not"
            f" answer now ({exc.error_code}: {exc.message})",
            error_code=TEMPORARILY_UNAVAILABLE,
        )
    return Unreachable(
        f"the trackbridge receiver at {session.config.receiver} did not answer"
        f" ({exc.error_code}: {exc.message}); it serves MLflow's reads and the writes that need"
        " MLflow's ids at once",
        error_code=TEMPORARILY_UNAVAILABLE,
    )


def not_carried(what: str, reason: str = GENAI_REASON) -> MlflowException:
    """MLflow's NOT_IMPLEMENTED for what the bridge does not carry, with the reason."""
    return MlflowException(f"{what}: {reason}", error_code=NOT_IMPLEMENTED)


def run_uri(session: Session, run_id: str) -> str:
    """A run's artifact URI as this client addresses it."""
    return f"{SCHEME}{session.config.receiver}/runs/{run_id}/artifacts"


def model_uri(session: Session, model_id: str) -> str:
    """A logged model's artifact location as this client addresses it."""
    return f"{SCHEME}{session.config.receiver}/models/{model_id}/artifacts"


def run_of(session: Session, proto: Any) -> Run:
    """A Run from the receiver, addressed through this client's receiver."""
    proto.info.artifact_uri = run_uri(session, proto.info.run_id)
    run: Run = Run.from_proto(proto)
    return run


def experiment_of(session: Session, proto: Any) -> Experiment:
    """An Experiment from the receiver."""
    proto.artifact_location = f"{SCHEME}{session.config.receiver}/experiments/{proto.experiment_id}"
    experiment: Experiment = Experiment.from_proto(proto)
    return experiment


def model_of(session: Session, proto: Any) -> LoggedModel:
    """A LoggedModel from the receiver, addressed through this client's receiver."""
    proto.info.artifact_uri = model_uri(session, proto.info.model_id)
    model: LoggedModel = LoggedModel.from_proto(proto)
    return model
