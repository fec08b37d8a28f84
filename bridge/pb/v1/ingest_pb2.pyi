from bridge.pb.v1 import events_pb2 as _events_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Ack(_message.Message):
    __slots__ = ("run_key", "acked_seq", "mlflow_run_id", "mlflow_experiment_id", "advised_linger_s")
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ADVISED_LINGER_S_FIELD_NUMBER: _ClassVar[int]
    run_key: str
    acked_seq: int
    mlflow_run_id: str
    mlflow_experiment_id: str
    advised_linger_s: float
    def __init__(self, run_key: _Optional[str] = ..., acked_seq: _Optional[int] = ..., mlflow_run_id: _Optional[str] = ..., mlflow_experiment_id: _Optional[str] = ..., advised_linger_s: _Optional[float] = ...) -> None: ...

class RunQuery(_message.Message):
    __slots__ = ("client_id", "run_key")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    run_key: str
    def __init__(self, client_id: _Optional[str] = ..., run_key: _Optional[str] = ...) -> None: ...
