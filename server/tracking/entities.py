"""What leaves the receiver about MLflow's entities: protobuf forms in which every artifact
location is a trackbridge address (clients put their receiver's address in), so that no
artifact-store URI or bucket path reaches a client and every file travels through here."""

from __future__ import annotations

from typing import Any

from mlflow.protos import service_pb2


def run_uri(run_id: str) -> str:
    """Where a run's artifacts are, as clients address them (host filled in by the client)."""
    return f"trackbridge:///runs/{run_id}/artifacts"


def model_uri(model_id: str) -> str:
    """Where a logged model's artifacts are, as clients address them."""
    return f"trackbridge:///models/{model_id}/artifacts"


def experiment_uri(experiment_id: str) -> str:
    """An experiment's artifact location, as clients see it."""
    return f"trackbridge:///experiments/{experiment_id}"


def run_proto(run: Any) -> service_pb2.Run:
    """A Run, its artifact URI replaced."""
    proto: service_pb2.Run = run.to_proto()
    proto.info.artifact_uri = run_uri(run.info.run_id)
    return proto


def experiment_proto(experiment: Any) -> service_pb2.Experiment:
    """An Experiment, its artifact location replaced."""
    proto: service_pb2.Experiment = experiment.to_proto()
    proto.artifact_location = experiment_uri(str(experiment.experiment_id))
    return proto


def model_proto(model: Any) -> service_pb2.LoggedModel:
    """A LoggedModel, its artifact location replaced."""
    proto: service_pb2.LoggedModel = model.to_proto()
    proto.info.artifact_uri = model_uri(model.model_id)
    return proto
