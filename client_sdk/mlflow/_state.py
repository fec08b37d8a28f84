"""The state behind ``client_sdk.mlflow``: the session, the active experiment, each thread's
stack of active runs (MLflow keeps it per thread too), and experiments known by name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from bridge import envvars
from bridge.errors import MlflowException
from client_sdk._compat.addressing import (
    DEFAULT_EXPERIMENT_ID,
    RESOURCE_DOES_NOT_EXIST,
    SCHEME,
    local_experiment_id,
    receiver_of,
)
from client_sdk._compat.entities import Experiment, RunOperations
from client_sdk._compat.fluent import Fluent
from client_sdk._compat.session import RunRecord, Session


class FluentState:
    """Everything the module-level functions share (one per process)."""

    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._env = env
        self._lock = threading.RLock()
        self._session: Session | None = None
        self._local = threading.local()
        self.receiver: str | None = None
        self.tracking_uri: str | None = None
        self.options: dict[str, object] = {}
        self.experiment: str | None = None
        """The active experiment's name (set_experiment), None when none was set."""
        self.experiment_id: str | None = None
        """The active experiment's MLflow id, when set_experiment named one this process does
        not know by name."""
        self.experiments: dict[str, str] = {DEFAULT_EXPERIMENT_ID: ""}
        """Experiment id -> name, for the ids this process has handed out or learned."""
        self.auto_start: Callable[[], RunRecord] = _no_auto_start
        """Starts a run for a call made with none active (set by ``client_sdk.mlflow``)."""

    # -- session ------------------------------------------------------------------------------

    def session(self) -> Session:
        """The session, created at first use from the tracking URI and the environment."""
        session = self._session
        if session is not None:
            return session
        with self._lock:
            if self._session is None:
                receiver = self.receiver
                if receiver is None:
                    receiver = receiver_of(self._env.get(envvars.MLFLOW_TRACKING_URI, ""))
                session = Session(receiver, env=self._env, **self.options)  # type: ignore[arg-type]
                session.exit_hooks.append(self.end_at_exit)
                self._session = session
            return self._session

    def has_session(self) -> bool:
        """Whether a session was created."""
        return self._session is not None

    def reset_session(self) -> None:
        """Closes the session (at a change of receiver or client options)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def reset_after_fork(self) -> None:
        """In a forked child: no run is active (the parent's stay the parent's)."""
        self._lock = threading.RLock()
        self._local = threading.local()

    # -- runs ---------------------------------------------------------------------------------

    def stack(self) -> list[RunRecord]:
        """This thread's active runs, innermost last."""
        stack: list[RunRecord] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    @property
    def last(self) -> RunRecord | None:
        """The run this thread ended last."""
        return getattr(self._local, "last", None)

    @last.setter
    def last(self, record: RunRecord | None) -> None:
        self._local.last = record

    def run(self, run_id: str | None = None) -> RunRecord:
        """The run a call goes to: ``run_id``'s, else the active one, else a new one (MLflow
        starts a run for a logging call made with none active)."""
        if run_id is not None:
            return self.find_run(run_id)
        stack = self.stack()
        return stack[-1] if stack else self.auto_start()

    def find_run(self, run_id: str) -> RunRecord:
        """A run this process knows by id (MLflow's id or its key); else MLflow's error."""
        record = self.session().find(run_id)
        if record is None:
            raise MlflowException(
                f"Run '{run_id}' was not started or resumed by this process: trackbridge logs"
                f" to runs it knows (start_run(run_id='{run_id}') resumes one first)",
                RESOURCE_DOES_NOT_EXIST,
            )
        return record

    def end_at_exit(self) -> None:
        """As MLflow at exit: ends the innermost active run of the exiting thread, FINISHED."""
        stack = self.stack()
        if stack:
            record = stack.pop()
            self.last = record
            self.session().end_run(record, "FINISHED")

    # -- experiments ----------------------------------------------------------------------------

    def register_experiment(self, name: str) -> Experiment:
        """An experiment by name, with its local id."""
        exp_id = local_experiment_id(name)
        with self._lock:
            self.experiments[exp_id] = name
        return self.experiment_entity(exp_id)

    def experiment_entity(self, exp_id: str) -> Experiment:
        """The Experiment object of a known id."""
        name = self.experiments[exp_id]
        return Experiment(exp_id, name or self.session().config.job)

    def experiment_name(self, exp_id: str | int) -> str:
        """The name of an experiment id this process knows; else a clear error."""
        key = str(exp_id)
        if key in self.experiments:
            return self.experiments[key]
        raise MlflowException(
            f"Experiment with ID '{key}' is not known to this client: trackbridge addresses"
            " experiments by name; use set_experiment(experiment_name=...)",
            RESOURCE_DOES_NOT_EXIST,
        )

    def default_experiment(self) -> str:
        """The experiment of a run started with no experiment id: the active one, else
        ``MLFLOW_EXPERIMENT_NAME``, else ``MLFLOW_EXPERIMENT_ID`` (when known by name), else
        the job's ("")."""
        if self.experiment is not None:
            return self.experiment
        if self.experiment_id is not None:
            return ""
        name = self._env.get(envvars.MLFLOW_EXPERIMENT_NAME)
        if name:
            self.register_experiment(name)
            return name
        exp_id = self._env.get("MLFLOW_EXPERIMENT_ID")
        if exp_id and exp_id in self.experiments:
            return self.experiments[exp_id]
        return ""

    def run_experiment(self, experiment_id: str | int | None) -> tuple[str, str]:
        """(name, MLflow id) of a new run's experiment: by the id given (a name this process
        knows, else an MLflow id the receiver checks), else the default's."""
        if experiment_id is None:
            name = self.default_experiment()
            env_id = self._env.get("MLFLOW_EXPERIMENT_ID", "")
            if name or self.experiment_id is not None:
                return name, self.experiment_id or ""
            return "", env_id if env_id not in self.experiments else ""
        key = str(experiment_id)
        if key in self.experiments:
            return self.experiments[key], ""
        return "", key


class LightBackend:
    """The light client's side of the shared fluent calls (client_sdk/_compat/fluent.py):
    the session and runs are ``STATE``'s, errors are trackbridge's MlflowException (MLflow's
    wording and codes), every metric call is the writer's, and a tracking URI given to
    ``set_tracking_uri`` is kept as given."""

    def __init__(self, state: FluentState, env: Mapping[str, str] = os.environ) -> None:
        self._state = state
        # MLflow's default for ``synchronous=None`` (read once: the hot path stays lean).
        self._async_default = env.get("MLFLOW_ENABLE_ASYNC_LOGGING", "").lower() in ("true", "1")

    def current_session(self) -> Session | None:
        return self._state.session() if self._state.has_session() else None

    def session(self) -> Session:
        return self._state.session()

    def metric_run(
        self, run_id: str | None, model_id: str | None, dataset: Any
    ) -> tuple[Session, RunRecord]:
        # model_id and dataset are accepted and not sent (docs/how-to/zero-code.md).
        record = self._state.run(run_id)
        return self._state.session(), record

    def error(self, exc: MlflowException) -> Exception:
        return exc

    def operations(self, synchronous: bool | None) -> RunOperations | None:
        if synchronous is None:
            synchronous = not self._async_default
        return None if synchronous else RunOperations(self._state.session().flush)

    def unserved(self, call: str, *args: Any) -> Any:
        raise AssertionError(f"the light client takes every {call} call")  # metric_run is total

    def drain(self) -> None:
        return  # calls go straight to the writer

    def given_uri(self) -> str | None:
        return self._state.tracking_uri

    def receiver_uri(self) -> str:
        return f"{SCHEME}{self._state.session().config.receiver}"

    def keep_uri(self, uri: str) -> None:
        self._state.tracking_uri = uri

    def point_at(self, receiver: str, uri: str | None) -> None:
        if uri is not None:
            self._state.tracking_uri = uri
        if receiver != self._state.receiver:
            self._state.receiver = receiver
            self._state.reset_session()

    def configure(self, options: Mapping[str, object]) -> None:
        self._state.options.update(options)
        self._state.reset_session()


def _after_fork_in_child() -> None:
    # The child's runs are its own: a forked worker that logs starts a run (see Session).
    STATE.reset_after_fork()


def _no_auto_start() -> RunRecord:
    raise RuntimeError("client_sdk.mlflow is not imported")


STATE = FluentState()
"""The process's one fluent state."""
LIGHT = LightBackend(STATE)
"""The light client's backend for the shared fluent calls."""
FLUENT = Fluent(LIGHT)
"""The shared fluent calls of the light client (``client_sdk.mlflow``'s functions)."""

os.register_at_fork(after_in_child=_after_fork_in_child)
