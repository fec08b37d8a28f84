"""The training-side SDK: log as with MLflow, delivered through a trackbridge receiver."""

from bridge.errors import MlflowException
from bridge.events import RunStatus
from client_sdk.config import WriterConfig
from client_sdk.writer import RunHandle, Writer

__all__ = ["MlflowException", "RunHandle", "RunStatus", "Writer", "WriterConfig"]
