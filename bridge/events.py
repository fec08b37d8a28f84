"""The event model: what a client logs, independent of protobuf and MLflow."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class RunStatus(enum.Enum):
    """A run's outcome; the values are MLflow's status names."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric point, kept exactly as logged."""

    key: str
    value: float
    """The value; on the client it may also be a device scalar (a 0-d CUDA tensor) that the
    sender thread converts with ``float()``, so the training thread never waits on the device."""
    step: int
    timestamp_ms: int
    round: int = 0
    """The federated round the point belongs to (rounds start at 1); 0 means none."""
    num_examples: int = 0
    """How many examples the value was computed on (the weight of cross-client weighted
    means); 0 means not given."""


@dataclass(frozen=True, slots=True)
class Param:
    """A run parameter (a string, immutable once logged)."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Tag:
    """A run tag (a string; a later value replaces an earlier one)."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class RunStart:
    """Opens or resumes a run; always the first event of a run."""

    experiment: str = ""
    """MLflow experiment name; empty means the job's experiment."""
    run_name: str = ""
    """MLflow run name; empty means the client id."""
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    start_time_ms: int = 0
    parent_run_key: str = ""
    """Run key of the parent run for nested runs; empty means the job's parent run."""
    resume_run_id: str = ""
    """An existing MLflow run (of this client) to attach to and set RUNNING, instead of
    creating one; empty creates the run (or finds it again by its run key)."""
    experiment_id: str = ""
    """An existing MLflow experiment by id; when set it wins over ``experiment``."""
    top_level: bool = False
    """No job parent run: the run sits at the top of its experiment (ignored when nested)."""


@dataclass(frozen=True, slots=True)
class DeleteTag:
    """Removes a tag from the run."""

    key: str


@dataclass(frozen=True, slots=True)
class RunEnd:
    """Closes a run with the outcome the client reported."""

    status: RunStatus
    end_time_ms: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """The client's report of events of the run it lost before the receiver had them."""

    count: int
    reason: str
    """``DROPPED_BUFFER_FULL`` or ``DROPPED_SPOOL_LOST``."""
    first_seq: int = 0
    """Sequence numbers the lost events had (``DROPPED_SPOOL_LOST``); 0 when they had none."""
    last_seq: int = 0
    first_ms: int = 0
    """Client wall-clock milliseconds of the first and last loss; 0 when unknown."""
    last_ms: int = 0


DROPPED_BUFFER_FULL = "buffer_full"
"""The spool could not be written and the in-memory buffer was full: the events were never
numbered."""
DROPPED_SPOOL_LOST = "spool_lost"
"""The events were spooled, then lost with the spool (a torn WAL, an unreadable file)."""


@dataclass(frozen=True, slots=True)
class MlflowCall:
    """A write of MLflow's API beyond the kinds above (``delete_run``, ``log_inputs``,
    ``log_outputs``, logged-model updates...), applied in order with the run's events."""

    method: str
    """Full name of MLflow's request message, e.g. ``mlflow.LogInputs`` (see
    ``bridge.protocol.JOURNALED_CALLS``)."""
    request: bytes
    """The serialized request; the receiver sets the run's MLflow id where it names the run."""


Event = Metric | Param | Tag | RunStart | RunEnd | DeleteTag | MlflowCall | Dropped


@dataclass(frozen=True, slots=True)
class EventBatch:
    """A contiguous range of events of one run of one client: the wire unit."""

    client_id: str
    job: str
    run_key: str
    first_seq: int
    """Sequence number of ``events[0]``; sequences start at 1."""
    events: tuple[Event, ...]
    experiment: str = ""
    """The run's experiment name as its start chose it, on every batch ("" when not given)."""
    experiment_id: str = ""
    """The run's experiment id as its start chose it (wins over the name; "" when not given)."""

    @property
    def last_seq(self) -> int:
        """Sequence number of the last event."""
        return self.first_seq + len(self.events) - 1
