"""System metrics in the light client, as MLflow's fluent API switches them: one sampler per run,
from ``start_run`` to ``end_run``, logging ``system/*`` at steps 0, 1, 2, ... of that run.

On when ``start_run(log_system_metrics=True)``, else after ``enable_system_metrics_logging()``,
else when ``TRACKBRIDGE_SYSTEM_METRICS=1`` or MLflow's ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING``
is true. The switches are kept here, not in the environment (MLflow's own functions set an
environment variable; this module leaves the user's environment alone). With the mlflow package
installed, ``client_sdk.mlflow`` is MLflow itself and its own monitor runs, reading the run's
status back through the receiver.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Mapping

from bridge import envvars
from client_sdk._compat.session import RunRecord, Session
from client_sdk.config import env_flag
from client_sdk.system_metrics import Sampler, probe

_MLFLOW_SWITCH = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
_lock = threading.Lock()
_switch: dict[str, object] = {}
"""``enabled`` (bool) and ``interval_s`` (float), once set by the functions below."""
_samplers: dict[str, Sampler] = {}
"""Run key -> the sampler of that run."""
_hooked: set[int] = set()


def enable_system_metrics_logging() -> None:
    """As MLflow's: runs started from now on sample system metrics (``start_run`` can opt out)."""
    _switch["enabled"] = True


def disable_system_metrics_logging() -> None:
    """As MLflow's: runs started from now on do not sample (``start_run`` can opt in)."""
    _switch["enabled"] = False


def set_system_metrics_sampling_interval(interval: float | None) -> None:
    """As MLflow's: seconds between two samples of runs started from now on (None: default)."""
    if interval is None:
        _switch.pop("interval_s", None)
    else:
        _switch["interval_s"] = float(interval)


def _wanted(log_system_metrics: bool | None, env: Mapping[str, str]) -> bool:
    if log_system_metrics is not None:
        return bool(log_system_metrics)
    enabled = _switch.get("enabled")
    if enabled is not None:
        return bool(enabled)
    return env_flag(env, envvars.TRACKBRIDGE_SYSTEM_METRICS) or env.get(
        _MLFLOW_SWITCH, ""
    ).strip().lower() in {"true", "1"}


def start_for(
    session: Session,
    record: RunRecord,
    log_system_metrics: bool | None,
    env: Mapping[str, str] = os.environ,
) -> None:
    """Starts sampling into ``record`` when wanted (see the module's docstring)."""
    if not _wanted(log_system_metrics, env):
        return
    host = probe()
    if host is None:
        return
    steps = itertools.count()
    handle = record.handle

    def emit(sample: Mapping[str, float]) -> bool:
        if handle.ended:
            return False
        session.writer.log_metrics(sample, step=next(steps), run=handle)
        return True

    interval = _switch.get("interval_s", session.config.system_metrics_interval_s)
    sampler = Sampler(host, emit, float(interval))  # type: ignore[arg-type]
    with _lock:
        previous = _samplers.pop(record.key, None)
        _samplers[record.key] = sampler
        if id(session) not in _hooked:
            _hooked.add(id(session))
            session.exit_hooks.insert(0, stop_all)  # before the runs end and the writer closes
    if previous is not None:
        previous.stop()
    sampler.start()


def stop_for(record: RunRecord) -> None:
    """Stops the sampler of ``record``, if it has one (before its end is logged)."""
    with _lock:
        sampler = _samplers.pop(record.key, None)
    if sampler is not None:
        sampler.stop()


def stop_all() -> None:
    """Stops every sampler (at interpreter exit)."""
    with _lock:
        samplers = list(_samplers.values())
        _samplers.clear()
    for sampler in samplers:
        sampler.stop()


def _after_fork_in_child() -> None:
    # The samplers' threads are the parent's; the child's runs start their own.
    _samplers.clear()
    _hooked.clear()
    _lock.release()


# The lock is held across fork, so that the child never inherits it taken by another thread.
os.register_at_fork(
    before=_lock.acquire, after_in_parent=_lock.release, after_in_child=_after_fork_in_child
)
