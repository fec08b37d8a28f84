"""Finding the spools in a folder whose writer is gone, and which destination they belong to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from client_sdk.spool.file import Spool
from client_sdk.spool.names import CORRUPT, SUFFIX, Destination, SpoolBusy, SpoolError, SpoolGone


def spool_paths(directory: Path, prefix: str = "") -> list[Path]:
    """Every spool in ``directory`` whose file name starts with ``prefix``: by its database,
    or by its lock file alone (a spool whose damaged database was moved aside)."""
    if not directory.is_dir():
        return []
    names = {p.name for p in directory.glob(f"{prefix}*{SUFFIX}")}
    names |= {p.name.removesuffix(".lock") for p in directory.glob(f"{prefix}*{SUFFIX}.lock")}
    return [directory / name for name in sorted(names)]


def corrupt_files(directory: Path) -> list[Path]:
    """Damaged databases moved aside earlier (kept for their owner to inspect)."""
    if not directory.is_dir():
        return []
    found = directory.glob(f"*{SUFFIX}{CORRUPT}*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


@dataclass
class Found:
    """What a search turned up."""

    adopted: list[Spool] = field(default_factory=list)
    """Spools now locked by this process, for it to deliver."""
    passed_over: list[tuple[Path, Destination | None]] = field(default_factory=list)
    """Orphaned spools of another destination (or of none recorded), left alone."""
    problems: list[str] = field(default_factory=list)
    """Spools that could not be opened at all, one line each."""


def adopt_orphans(
    directory: Path, accept: Callable[[Destination | None], bool], prefix: str = ""
) -> Found:
    """Locks and opens every spool in ``directory`` whose writer is gone and whose destination
    ``accept`` takes. A damaged database is moved aside as it is opened (``Spool.adopt``)."""
    found = Found()
    for path in spool_paths(directory, prefix):
        try:
            spool = Spool.adopt(path)
        except SpoolBusy:
            continue  # its writer is alive
        except SpoolGone:
            continue  # its writer deleted it, empty, as it closed
        except (SpoolError, OSError) as exc:
            found.problems.append(f"{path.name}: cannot be opened: {exc}")
            continue
        if accept(spool.destination):
            found.adopted.append(spool)
        else:
            found.passed_over.append((path, spool.destination))
            spool.close(delete=False)
    return found
