"""Federated rounds on the client: the ``round=`` and ``num_examples=`` arguments of the log
calls, checked at the call, and the round a ``federated_round`` block sets on a writer."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from bridge.errors import MlflowException
from bridge.events import Event, Metric
from bridge.validation import MAX_INT64


@dataclass(frozen=True, slots=True)
class RoundDefault:
    """The round (and weight) a ``federated_round`` block gives the metrics logged in it."""

    round: int
    num_examples: int = 0


RoundBlock = contextlib.AbstractContextManager[RoundDefault]
"""What ``federated_round`` returns: a ``with`` block."""


def check_round(name: str, value: object) -> int:
    """``value`` as a positive int64 (a round, or a count of examples).

    Raises:
        MlflowException: INVALID_PARAMETER_VALUE, naming the argument and the value.
    """
    if type(value) is not int or not 1 <= value <= MAX_INT64:  # bool is not a round
        raise MlflowException.invalid_parameter_value(
            f"Got invalid value {value!r} for {name}: it must be a positive integer"
            f" (1 to {MAX_INT64}); rounds start at 1"
        )
    return value


def resolve(
    round_: int | None, num_examples: int | None, default: RoundDefault | None
) -> tuple[int, int]:
    """The ``(round, num_examples)`` a point carries (0 for none): the arguments, checked,
    else the block's default. A ``num_examples`` without any round is allowed (a weight for
    the receiver's aggregate by step)."""
    r = check_round("round", round_) if round_ is not None else 0
    n = check_round("num_examples", num_examples) if num_examples is not None else 0
    if default is not None and r == 0:
        r = default.round
        if n == 0:
            n = default.num_examples
    return r, n


def with_default(event: Event, default: RoundDefault | None) -> Event:
    """A metric event of the compatibility layers, given the block's round when it has none."""
    if default is None or type(event) is not Metric or event.round:
        return event
    return dataclasses.replace(
        event, round=default.round, num_examples=event.num_examples or default.num_examples
    )


class RoundScope:
    """The round blocks of one writer (a stack: blocks nest, the innermost wins)."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: RoundDefault | None = None

    @contextlib.contextmanager
    def block(self, round_: int, num_examples: int | None = None) -> Iterator[RoundDefault]:
        """Sets the default round while the block runs (checked at entry)."""
        default = RoundDefault(
            check_round("round", round_),
            check_round("num_examples", num_examples) if num_examples is not None else 0,
        )
        outer, self.current = self.current, default
        try:
            yield default
        finally:
            self.current = outer


class RoundCalls:
    """The Writer's ``federated_round`` (the Writer provides ``_rounds``)."""

    _rounds: RoundScope

    def federated_round(self, round: int, num_examples: int | None = None) -> RoundBlock:
        """``with writer.federated_round(3, num_examples=600):`` gives metrics logged on this
        writer in the block (any thread) that round and weight, unless a call names its own;
        blocks nest. Raises MlflowException (INVALID_PARAMETER_VALUE) for a bad round."""
        return self._rounds.block(round, num_examples)
