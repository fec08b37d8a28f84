from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_KILLED: _ClassVar[RunStatus]
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_FINISHED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_KILLED: RunStatus

class Metric(_message.Message):
    __slots__ = ("key", "value", "step", "timestamp_ms", "round", "num_examples")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: float
    step: int
    timestamp_ms: int
    round: int
    num_examples: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ..., step: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., round: _Optional[int] = ..., num_examples: _Optional[int] = ...) -> None: ...

class Param(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class RunStart(_message.Message):
    __slots__ = ("experiment", "run_name", "tags", "description", "start_time_ms", "parent_run_key", "resume_run_id", "experiment_id", "top_level")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PARENT_RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    RESUME_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_LEVEL_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    run_name: str
    tags: _containers.ScalarMap[str, str]
    description: str
    start_time_ms: int
    parent_run_key: str
    resume_run_id: str
    experiment_id: str
    top_level: bool
    def __init__(self, experiment: _Optional[str] = ..., run_name: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., start_time_ms: _Optional[int] = ..., parent_run_key: _Optional[str] = ..., resume_run_id: _Optional[str] = ..., experiment_id: _Optional[str] = ..., top_level: bool = ...) -> None: ...

class DeleteTag(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class Dropped(_message.Message):
    __slots__ = ("count", "reason", "first_seq", "last_seq", "first_ms", "last_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    reason: str
    first_seq: int
    last_seq: int
    first_ms: int
    last_ms: int
    def __init__(self, count: _Optional[int] = ..., reason: _Optional[str] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., first_ms: _Optional[int] = ..., last_ms: _Optional[int] = ...) -> None: ...

class RunEnd(_message.Message):
    __slots__ = ("status", "end_time_ms")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    status: RunStatus
    end_time_ms: int
    def __init__(self, status: _Optional[_Union[RunStatus, str]] = ..., end_time_ms: _Optional[int] = ...) -> None: ...

class MlflowCall(_message.Message):
    __slots__ = ("method", "request")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    method: str
    request: bytes
    def __init__(self, method: _Optional[str] = ..., request: _Optional[bytes] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("metric", "param", "tag", "run_start", "run_end", "delete_tag", "mlflow_call", "dropped")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    PARAM_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    RUN_START_FIELD_NUMBER: _ClassVar[int]
    RUN_END_FIELD_NUMBER: _ClassVar[int]
    DELETE_TAG_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_CALL_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    metric: Metric
    param: Param
    tag: Tag
    run_start: RunStart
    run_end: RunEnd
    delete_tag: DeleteTag
    mlflow_call: MlflowCall
    dropped: Dropped
    def __init__(self, metric: _Optional[_Union[Metric, _Mapping]] = ..., param: _Optional[_Union[Param, _Mapping]] = ..., tag: _Optional[_Union[Tag, _Mapping]] = ..., run_start: _Optional[_Union[RunStart, _Mapping]] = ..., run_end: _Optional[_Union[RunEnd, _Mapping]] = ..., delete_tag: _Optional[_Union[DeleteTag, _Mapping]] = ..., mlflow_call: _Optional[_Union[MlflowCall, _Mapping]] = ..., dropped: _Optional[_Union[Dropped, _Mapping]] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("client_id", "job", "run_key", "first_seq", "events", "client_pending_events", "client_spool_bytes", "experiment", "experiment_id")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PENDING_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    job: str
    run_key: str
    first_seq: int
    events: _containers.RepeatedCompositeFieldContainer[Event]
    client_pending_events: int
    client_spool_bytes: int
    experiment: str
    experiment_id: str
    def __init__(self, client_id: _Optional[str] = ..., job: _Optional[str] = ..., run_key: _Optional[str] = ..., first_seq: _Optional[int] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., client_pending_events: _Optional[int] = ..., client_spool_bytes: _Optional[int] = ..., experiment: _Optional[str] = ..., experiment_id: _Optional[str] = ...) -> None: ...
