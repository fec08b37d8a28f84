from bridge.pb.v1 import artifacts_pb2 as _artifacts_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TrackingCall(_message.Message):
    __slots__ = ("client_id", "job", "method", "request", "fresh_run_keys")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    FRESH_RUN_KEYS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    job: str
    method: str
    request: bytes
    fresh_run_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, client_id: _Optional[str] = ..., job: _Optional[str] = ..., method: _Optional[str] = ..., request: _Optional[bytes] = ..., fresh_run_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class TrackingReply(_message.Message):
    __slots__ = ("response", "error_code", "message")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    response: bytes
    error_code: str
    message: str
    def __init__(self, response: _Optional[bytes] = ..., error_code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ArtifactRead(_message.Message):
    __slots__ = ("client_id", "job", "run_id", "model_id", "path", "fresh_run_keys")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FRESH_RUN_KEYS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    job: str
    run_id: str
    model_id: str
    path: str
    fresh_run_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, client_id: _Optional[str] = ..., job: _Optional[str] = ..., run_id: _Optional[str] = ..., model_id: _Optional[str] = ..., path: _Optional[str] = ..., fresh_run_keys: _Optional[_Iterable[str]] = ...) -> None: ...
