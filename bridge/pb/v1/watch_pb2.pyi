from bridge.pb.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRequest(_message.Message):
    __slots__ = ("job", "client_id", "include_events")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    job: str
    client_id: str
    include_events: bool
    def __init__(self, job: _Optional[str] = ..., client_id: _Optional[str] = ..., include_events: bool = ...) -> None: ...

class ClientState(_message.Message):
    __slots__ = ("job", "client_id", "run_key", "connected", "state", "last_seen_ms", "events_per_s", "events_received", "events_acked", "events_flushed", "dead_letters", "backlog_events", "client_pending_events", "client_spool_bytes", "mlflow_run_id", "mlflow_experiment_id", "mlflow_run_url", "latest")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    EVENTS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_ACKED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FLUSHED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PENDING_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_RUN_URL_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    job: str
    client_id: str
    run_key: str
    connected: bool
    state: str
    last_seen_ms: int
    events_per_s: float
    events_received: int
    events_acked: int
    events_flushed: int
    dead_letters: int
    backlog_events: int
    client_pending_events: int
    client_spool_bytes: int
    mlflow_run_id: str
    mlflow_experiment_id: str
    mlflow_run_url: str
    latest: _containers.RepeatedCompositeFieldContainer[_events_pb2.Metric]
    def __init__(self, job: _Optional[str] = ..., client_id: _Optional[str] = ..., run_key: _Optional[str] = ..., connected: bool = ..., state: _Optional[str] = ..., last_seen_ms: _Optional[int] = ..., events_per_s: _Optional[float] = ..., events_received: _Optional[int] = ..., events_acked: _Optional[int] = ..., events_flushed: _Optional[int] = ..., dead_letters: _Optional[int] = ..., backlog_events: _Optional[int] = ..., client_pending_events: _Optional[int] = ..., client_spool_bytes: _Optional[int] = ..., mlflow_run_id: _Optional[str] = ..., mlflow_experiment_id: _Optional[str] = ..., mlflow_run_url: _Optional[str] = ..., latest: _Optional[_Iterable[_Union[_events_pb2.Metric, _Mapping]]] = ...) -> None: ...

class ReceiverState(_message.Message):
    __slots__ = ("mlflow_reachable", "backlog_events", "connected_clients", "mlflow_ui_url", "round_lines")
    MLFLOW_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_UI_URL_FIELD_NUMBER: _ClassVar[int]
    ROUND_LINES_FIELD_NUMBER: _ClassVar[int]
    mlflow_reachable: bool
    backlog_events: int
    connected_clients: int
    mlflow_ui_url: str
    round_lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mlflow_reachable: bool = ..., backlog_events: _Optional[int] = ..., connected_clients: _Optional[int] = ..., mlflow_ui_url: _Optional[str] = ..., round_lines: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchUpdate(_message.Message):
    __slots__ = ("time_ms", "clients", "batches", "events_dropped", "receiver")
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    time_ms: int
    clients: _containers.RepeatedCompositeFieldContainer[ClientState]
    batches: _containers.RepeatedCompositeFieldContainer[_events_pb2.EventBatch]
    events_dropped: int
    receiver: ReceiverState
    def __init__(self, time_ms: _Optional[int] = ..., clients: _Optional[_Iterable[_Union[ClientState, _Mapping]]] = ..., batches: _Optional[_Iterable[_Union[_events_pb2.EventBatch, _Mapping]]] = ..., events_dropped: _Optional[int] = ..., receiver: _Optional[_Union[ReceiverState, _Mapping]] = ...) -> None: ...
