"""Distributed training: which rank this process is, and what that means for its runs.

Under ``torchrun`` (``RANK``/``WORLD_SIZE``) or an initialized ``torch.distributed`` process
group with more than one process, each rank is a client of its own: its client id gets a
``-rank<N>`` suffix and its runs the tag ``trackbridge.rank``. With ``rank_zero_only`` (or
``TRACKBRIDGE_RANK_ZERO_ONLY=1``) only rank 0 logs; other ranks check their calls as usual and
send nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from bridge import envvars

RANK_TAG = "trackbridge.rank"
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class RankInfo:
    """This process's place in a distributed job (rank 0 of 1 when it is not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        """More than one process logs under the same client id."""
        return self.world_size > 1

    def client_id(self, base: str) -> str:
        """The client id of this rank: ``base`` itself unless the job is distributed."""
        return f"{base}-rank{self.rank}" if self.distributed else base

    def run_tags(self) -> dict[str, str]:
        """Tags every run of this rank carries."""
        return {RANK_TAG: str(self.rank)} if self.distributed else {}


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def detect_rank(env: Mapping[str, str] = os.environ) -> RankInfo:
    """``RANK``/``WORLD_SIZE`` from the environment, else torch.distributed if the program has
    imported and initialized it (torch is never imported here)."""
    rank, world = _int(env.get("RANK")), _int(env.get("WORLD_SIZE"))
    if rank is not None and world is not None and 0 <= rank < world:
        return RankInfo(rank, world)
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return RankInfo(int(dist.get_rank()), int(dist.get_world_size()))
    return RankInfo()


def logs_on_rank_zero_only(explicit: bool | None, env: Mapping[str, str] = os.environ) -> bool:
    """Whether only rank 0 logs: the argument if given, else ``TRACKBRIDGE_RANK_ZERO_ONLY``."""
    if explicit is not None:
        return explicit
    return env.get(envvars.TRACKBRIDGE_RANK_ZERO_ONLY, "").strip().lower() in _TRUE
