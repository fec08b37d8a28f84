"""The handle of a run a writer started."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from client_sdk._batches import RunState


class _RunStates(Protocol):
    def run_state(self, run_key: str) -> RunState | None: ...


class _Writer(Protocol):
    @property
    def _sender(self) -> _RunStates: ...


@dataclass(eq=False)
class RunHandle:
    """A run this writer started. ``run_id`` is MLflow's id once the receiver has reported it."""

    run_key: str
    run_name: str
    _writer: _Writer = field(repr=False)
    _params: dict[str, str] = field(default_factory=dict, repr=False)
    ended: bool = False

    @property
    def run_id(self) -> str:
        """MLflow's run id, or "" until the receiver has created the run."""
        state = self._writer._sender.run_state(self.run_key)
        return state.run_id if state is not None else ""

    @property
    def experiment_id(self) -> str:
        """MLflow's id of the run's experiment, or "" until the receiver has created the run."""
        state = self._writer._sender.run_state(self.run_key)
        return state.experiment_id if state is not None else ""
