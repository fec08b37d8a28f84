from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArtifactHeader(_message.Message):
    __slots__ = ("client_id", "job", "run_key", "upload_id", "artifact_path", "file_name", "size", "sha256", "model_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    job: str
    run_key: str
    upload_id: str
    artifact_path: str
    file_name: str
    size: int
    sha256: str
    model_id: str
    def __init__(self, client_id: _Optional[str] = ..., job: _Optional[str] = ..., run_key: _Optional[str] = ..., upload_id: _Optional[str] = ..., artifact_path: _Optional[str] = ..., file_name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., model_id: _Optional[str] = ...) -> None: ...

class ArtifactData(_message.Message):
    __slots__ = ("offset", "data", "crc32")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    crc32: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32: _Optional[int] = ...) -> None: ...

class ArtifactTrailer(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("header", "data", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: ArtifactHeader
    data: ArtifactData
    trailer: ArtifactTrailer
    def __init__(self, header: _Optional[_Union[ArtifactHeader, _Mapping]] = ..., data: _Optional[_Union[ArtifactData, _Mapping]] = ..., trailer: _Optional[_Union[ArtifactTrailer, _Mapping]] = ...) -> None: ...

class ArtifactAck(_message.Message):
    __slots__ = ("upload_id", "size")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    size: int
    def __init__(self, upload_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ReceiverInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReceiverInfo(_message.Message):
    __slots__ = ("mlflow_url",)
    MLFLOW_URL_FIELD_NUMBER: _ClassVar[int]
    mlflow_url: str
    def __init__(self, mlflow_url: _Optional[str] = ...) -> None: ...
