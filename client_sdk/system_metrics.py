"""System metrics of a client's host (CPU, memory, disk, network, NVIDIA GPUs), sampled on a
daemon thread of their own and logged through the writer like any other metric.

The names are MLflow's own (``mlflow/system_metrics/metrics/*.py`` in MLflow 3.17), with its
``system/`` prefix, so MLflow's UI files them under "System metrics" exactly as it does for its
own monitor: ``system/cpu_utilization_percentage``, ``system/system_memory_usage_megabytes``,
``system/gpu_0_utilization_percentage``, ... Values are rounded to one decimal as MLflow does;
the network counters are megabytes since sampling started, as MLflow reports them.

MLflow's monitor cannot be used as it is: it needs MLflow credentials on the node and polls
``get_run`` on every tick. This one only logs, each sample is one ``log_metrics`` call at the
next step of its run, and the writer carries it to the receiver.

psutil (CPU, memory, disk, network) and nvidia-ml-py (``pynvml``, GPUs) are optional, the
``system`` extra. Without psutil, asking for system metrics logs one warning naming
``pip install 'trackbridge[system]'`` and everything else goes on; without pynvml or without a
GPU there are no GPU metrics. CPU use is computed from ``psutil.cpu_times()`` deltas kept here
rather than with ``psutil.cpu_percent()``, whose "since the last call" state is module-wide and
shared with the user's own calls.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Protocol

from bridge.worker import OnFailure, Worker
from client_sdk._handles import RunHandle
from client_sdk.config import WriterConfig

__all__ = [
    "DEFAULT_INTERVAL_S",
    "INSTALL_HINT",
    "HostProbe",
    "Sampler",
    "for_writer",
    "probe",
    "stop_sampler",
]

_logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0
"""MLflow's default sampling interval."""
INSTALL_HINT = "pip install 'trackbridge[system]'"
PREFIX = "system/"
_MB = 1e6
_warned = threading.Event()


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:  # also a module set to None in sys.modules
        return None


class _Gpus:
    """NVIDIA GPUs through NVML; absent when pynvml is missing or finds no device."""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._handles = [
            nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())
        ]

    @classmethod
    def open(cls) -> _Gpus | None:
        nvml = _optional("pynvml")
        if nvml is None:
            return None
        try:
            nvml.nvmlInit()
            gpus = cls(nvml)
        except Exception as exc:
            _logger.debug("trackbridge: no GPU metrics (NVML: %s)", exc)
            return None
        return gpus if gpus._handles else None

    def sample(self, out: dict[str, float]) -> None:
        nvml = self._nvml
        for i, handle in enumerate(self._handles):
            name = f"{PREFIX}gpu_{i}_"
            # Each reading on its own: a GPU that does not report power still reports memory.
            # An NVMLError leaves that reading out.
            with contextlib.suppress(Exception):
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                out[name + "memory_usage_percentage"] = memory.used / memory.total * 100
                out[name + "memory_usage_megabytes"] = memory.used / _MB
            with contextlib.suppress(Exception):
                utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
                out[name + "utilization_percentage"] = utilization.gpu
            with contextlib.suppress(Exception):
                milliwatts = nvml.nvmlDeviceGetPowerUsage(handle)
                limit = nvml.nvmlDeviceGetEnforcedPowerLimit(handle)
                out[name + "power_usage_watts"] = milliwatts / 1000
                out[name + "power_usage_percentage"] = milliwatts / limit * 100


class HostProbe:
    """Reads the host's counters; ``sample()`` gives the values since the previous call."""

    def __init__(self, psutil: ModuleType, gpus: _Gpus | None) -> None:
        self._psutil = psutil
        self._gpus = gpus
        self._cpu = psutil.cpu_times()
        net = psutil.net_io_counters()
        self._net0 = (net.bytes_recv, net.bytes_sent) if net is not None else (0, 0)

    @property
    def has_gpus(self) -> bool:
        """Whether GPU metrics are sampled."""
        return self._gpus is not None

    def sample(self) -> dict[str, float]:
        """One sample under MLflow's names, rounded to one decimal."""
        ps = self._psutil
        out: dict[str, float] = {}
        cpu = ps.cpu_times()
        total = sum(cpu) - sum(self._cpu)
        idle = _idle(cpu) - _idle(self._cpu)
        self._cpu = cpu
        out[PREFIX + "cpu_utilization_percentage"] = 100 * (1 - idle / total) if total > 0 else 0.0
        memory = ps.virtual_memory()
        out[PREFIX + "system_memory_usage_megabytes"] = memory.used / _MB
        out[PREFIX + "system_memory_usage_percentage"] = memory.used / memory.total * 100
        disk = ps.disk_usage(os.sep)
        out[PREFIX + "disk_usage_percentage"] = disk.percent
        out[PREFIX + "disk_usage_megabytes"] = disk.used / _MB
        out[PREFIX + "disk_available_megabytes"] = disk.free / _MB
        net = ps.net_io_counters()
        if net is not None:
            out[PREFIX + "network_receive_megabytes"] = (net.bytes_recv - self._net0[0]) / _MB
            out[PREFIX + "network_transmit_megabytes"] = (net.bytes_sent - self._net0[1]) / _MB
        if self._gpus is not None:
            self._gpus.sample(out)
        return {k: round(float(v), 1) for k, v in out.items()}


def _idle(times: Any) -> float:
    return float(times.idle + getattr(times, "iowait", 0.0))


def probe() -> HostProbe | None:
    """A probe of this host, or None (with one warning per process) when psutil is missing."""
    psutil = _optional("psutil")
    if psutil is None:
        if not _warned.is_set():
            _warned.set()
            _logger.warning(
                "trackbridge: system metrics need psutil, which is not installed; logging goes"
                " on without them. To sample CPU, memory, disk, network (and NVIDIA GPUs): %s",
                INSTALL_HINT,
            )
        return None
    return HostProbe(psutil, _Gpus.open())


class Sampler:
    """Samples every ``interval_s`` on a daemon thread and hands each sample to ``emit``.

    ``emit`` returns False when there is nothing left to sample for (the run ended); the
    thread then stops. Errors are logged once and sampling goes on.
    """

    def __init__(
        self,
        host: HostProbe,
        emit: Callable[[Mapping[str, float]], bool],
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"system metrics interval_s must be positive, got {interval_s!r}")
        self._host = host
        self._emit = emit
        self.interval_s = interval_s
        # RESTART: a sample is taken afresh each interval; nothing is carried over.
        self._worker = Worker("system-metrics", self._loop, on_failure=OnFailure.RESTART)
        self._failed = False
        self.samples = 0
        """Samples handed to ``emit`` so far."""

    def start(self) -> Sampler:
        """Starts the thread; returns self."""
        self._worker.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stops sampling; no sample is emitted once this returns (unless ``timeout_s`` ran
        out while a sample was being logged)."""
        self._worker.stop(time.monotonic() + timeout_s)

    @property
    def running(self) -> bool:
        """Whether the thread is sampling."""
        return self._worker.alive and not self._worker.stopping.is_set()

    @property
    def restarts(self) -> int:
        """Unexpected failures the sampler restarted after (each logged with its traceback)."""
        return self._worker.restarts

    def _loop(self, worker: Worker) -> None:
        while not worker.stopping.wait(self.interval_s):
            try:
                sample = self._host.sample()
            except Exception:  # the host's own trouble (psutil, NVML): logged once, goes on
                if not self._failed:
                    self._failed = True
                    _logger.warning("trackbridge: a system metrics sample failed", exc_info=True)
                continue
            self.samples += 1
            # Anything else (logging the sample) reaches the worker: logged, restarted.
            if not self._emit(sample):
                return


class _Writer(Protocol):
    """What the sampler needs of a Writer (which imports this module)."""

    config: WriterConfig

    @property
    def active_run(self) -> RunHandle | None: ...

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int | None = None,
        timestamp: int | None = None,
        *,
        run: RunHandle | None = None,
    ) -> None: ...


def for_writer(writer: _Writer) -> Sampler | None:
    """A started sampler logging into ``writer``'s active run (each run from step 0), every
    ``config.system_metrics_interval_s``; None unless ``config.system_metrics`` (or when psutil
    is missing). Samples taken while no run is active are left out: the sampler never starts a
    run."""
    if not writer.config.system_metrics:
        return None
    host = probe()
    if host is None:
        return None
    steps: dict[str, int] = {}

    def emit(sample: Mapping[str, float]) -> bool:
        run = writer.active_run
        if run is not None and not run.ended:
            step = steps.get(run.run_key, 0)
            steps[run.run_key] = step + 1
            writer.log_metrics(sample, step=step, run=run)
        return True

    return Sampler(host, emit, writer.config.system_metrics_interval_s).start()


def stop_sampler(sampler: Sampler | None) -> None:
    """Stops ``sampler``, if there is one."""
    if sampler is not None:
        sampler.stop()
