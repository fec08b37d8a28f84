"""Metric values the way MLflow's fluent API takes them, without importing torch or numpy.

Python numbers and numpy scalars are floats at once. A numpy array or torch tensor of one
element is read with ``.item()`` as MLflow does -- except a tensor on an accelerator: reading it
would make the training thread wait for the device, so a copy of it travels in the buffer as a
:class:`DeviceScalar` and the sender thread reads it (``float()``) when it builds the batch.
"""

from __future__ import annotations

from typing import Any, cast

from bridge.errors import INVALID_PARAMETER_VALUE, MlflowException
from bridge.events import RunEnd, RunStart
from bridge.validation import validate_metric_value


class DeviceScalar:
    """A one-element tensor on an accelerator, read on the sender thread."""

    __slots__ = ("_tensor",)

    def __init__(self, tensor: Any) -> None:
        self._tensor = tensor

    def __float__(self) -> float:
        return float(self._tensor.item())

    def __repr__(self) -> str:
        return f"DeviceScalar({self._tensor.device})"


def _conversion_error(exc: Exception) -> MlflowException:
    return MlflowException(
        f"Failed to convert metric value to float: {exc}", error_code=INVALID_PARAMETER_VALUE
    )


def is_tensor(value: object) -> bool:
    """True for a torch tensor, found without importing torch for any other value."""
    module = type(value).__module__
    if not module.startswith("torch"):
        return False
    import torch

    return isinstance(value, torch.Tensor)


def is_ndarray(value: object) -> bool:
    """True for a numpy array (numpy is imported only when the value comes from it)."""
    if type(value).__module__ != "numpy":
        return False
    import numpy as np

    return isinstance(value, np.ndarray)


def tensor_value(tensor: Any) -> float | DeviceScalar:
    """A one-element tensor's value: a float on the CPU, a DeviceScalar on an accelerator.

    Raises:
        MlflowException: The tensor has more than one element (MLflow's wording).
        TypeError: The tensor is complex.
    """
    tensor = tensor.detach()
    count = tensor.numel()  # metadata: no device sync
    if count != 1:
        raise _conversion_error(
            RuntimeError(f"a Tensor with {count} elements cannot be converted to Scalar")
        )
    if tensor.is_complex():
        raise TypeError("float() argument must be a string or a real number, not 'complex'")
    if tensor.device.type == "cpu":
        return float(tensor.item())
    # clone(): a later in-place update of the caller's tensor must not change what was logged.
    return DeviceScalar(tensor.clone())


def fluent_value(value: object) -> object:
    """MLflow's conversion of a metric value before it is sent.

    Floats pass; numpy arrays and torch tensors of one element are read; anything ``float()``
    accepts (numbers, numpy scalars, bools, numeric strings) becomes a float; anything else is
    returned unchanged for the caller to refuse as MLflow would.
    """
    if type(value) is float or value is None:
        return value
    if is_tensor(value):
        return tensor_value(value)
    if is_ndarray(value):
        try:
            return float(value.item())  # type: ignore[attr-defined]
        except ValueError as exc:
            raise _conversion_error(exc) from None
    try:
        return float(value)  # type: ignore[arg-type]
    except ValueError:
        return value


CLOSED_DROP = (
    "trackbridge: the writer is closed; dropping events logged to it (counted in dropped_events)"
)
"""The writer's warning at the first event dropped because it is closed."""
FULL_DROP = (
    "trackbridge: dropping events (the spool and the in-memory buffer are full); counting them"
    " in dropped_events and reporting them to the receiver, which records the loss on the run"
)
"""The writer's warning at the first event dropped for a full buffer."""


def defines_run(item: tuple[object, ...]) -> bool:
    """Whether a buffered item starts or ends a run."""
    # A run's start and end are never dropped for a full buffer: without them the run would be
    # lost whole, or stay RUNNING.
    return len(item) == 2 and isinstance(item[1], RunStart | RunEnd)


def checked_value(key: str, value: object, timestamp_ms: int) -> float:
    """A metric value as the Writer takes it: MLflow's checks, and a one-element tensor as
    MLflow takes it (one on an accelerator travels as a DeviceScalar: the sender thread reads
    it, never the caller's; ``Metric.value`` says so).
    """
    if is_tensor(value):
        return cast(float, tensor_value(value))
    return validate_metric_value(key, value, timestamp_ms)
