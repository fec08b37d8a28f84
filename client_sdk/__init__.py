"""The training-side SDK: log as with MLflow, delivered through a trackbridge receiver."""

from bridge.errors import MlflowException
from bridge.events import RunStatus
from client_sdk._results import CloseResult
from client_sdk._staging import ArtifactNotStaged
from client_sdk.config import WriterConfig
from client_sdk.writer import RunHandle, Writer

__all__ = [
    "ArtifactNotStaged",
    "CloseResult",
    "MlflowException",
    "RunHandle",
    "RunStatus",
    "Writer",
    "WriterConfig",
]
