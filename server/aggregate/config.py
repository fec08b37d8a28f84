"""What the receiver aggregates across clients, and how long it waits for them."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DEADLINE_S = 60.0


@dataclass(frozen=True, slots=True)
class AggregateConfig:
    """Which metrics the receiver aggregates across the clients of a job."""

    patterns: tuple[str, ...] = ()
    """``fnmatch`` globs of metric keys (``eval/*``); none aggregates nothing."""
    deadline_s: float = DEFAULT_DEADLINE_S
    """Seconds after a group's first point after which its aggregate is written even though
    some expected clients have not reported it."""

    def __post_init__(self) -> None:
        if not self.deadline_s > 0:
            raise ValueError(f"aggregate deadline_s must be positive, got {self.deadline_s!r}")
        for pattern in self.patterns:
            if not pattern or pattern != pattern.strip():
                raise ValueError(
                    f"aggregate pattern {pattern!r} must be a non-empty glob such as 'eval/*'"
                )

    @property
    def enabled(self) -> bool:
        """Whether any metric is aggregated."""
        return bool(self.patterns)
