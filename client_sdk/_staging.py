"""Staged artifact copies and their manifests: what makes an artifact durable on the client.

An artifact is copied into its spool's staging folder (``artifacts/S/<upload id>/<file name>``,
0600) while its SHA-256 is computed; then its manifest (``manifest.json`` beside it: run key,
artifact path, file name, size, SHA-256, upload id, destination) is written and renamed into
place, all before ``log_artifact`` returns. A copy with a manifest is delivered by this writer,
by the next writer for the same destination, or by ``trackbridge sync``, exactly once: the
receiver acknowledges an upload it already has (by upload id, or by run, path and SHA-256)
without storing it again. A copy without a manifest was never acknowledged to the caller and is
removed when its spool is adopted.

Staging checks the quota and the free space first (leaving room for the metric spool), and any
failure raises ``ArtifactNotStaged`` (an ``OSError``) at the call, leaving nothing behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge.pb.v1 import artifacts_pb2
from bridge.protocol import ARTIFACT_CHUNK_BYTES
from client_sdk.spool.names import MANIFEST, Destination, make_private_dir

DISK_HEADROOM_BYTES = 1 << 20
"""Free space an artifact must leave on the staging disk, so that the metric spool beside it
can still be written."""
_COPY_BYTES = 1 << 20


class ArtifactNotStaged(OSError):
    """An artifact could not be staged for upload (disk full, quota, I/O error); nothing of it
    was kept, and nothing else was affected. ``errno`` is ``ENOSPC`` (disk full), ``EDQUOT``
    (staging quota) or the I/O error's own, when known."""

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()


@dataclass(frozen=True, slots=True)
class StagedArtifact:
    """A staged copy of a file, waiting to be streamed."""

    run_key: str
    artifact_path: str
    """Directory inside the run's artifacts; "" is the root."""
    file_name: str
    size: int
    sha256: str
    upload_id: str
    path: Path
    """The staged copy; its folder holds the manifest too."""
    model_id: str = ""
    """An MLflow logged model the file belongs to ("": the run's artifacts)."""

    @property
    def shown(self) -> str:
        """The artifact's path in the run, for messages."""
        return f"{self.artifact_path}/{self.file_name}" if self.artifact_path else self.file_name


def new_path(stage_dir: Path, file_name: str) -> Path:
    """A fresh path named ``file_name`` in ``stage_dir``, for a caller that writes the file."""
    make_private_dir(stage_dir, levels=2)  # artifacts/<spool>/
    directory = stage_dir / uuid.uuid4().hex
    directory.mkdir(mode=0o700)
    return directory / file_name


def check_room(stage_dir: Path, size: int, quota_left: int, shown: str) -> None:
    """Raises ArtifactNotStaged when ``size`` bytes exceed the quota or the free space."""
    if size > quota_left:
        raise ArtifactNotStaged(
            errno.EDQUOT,
            f"trackbridge: cannot stage artifact {shown} ({size} bytes) for upload: the"
            f" staging quota has {max(0, quota_left)} bytes left (WriterConfig."
            "max_staged_artifact_bytes); wait for earlier artifacts to reach the receiver",
        )
    make_private_dir(stage_dir, levels=2)  # artifacts/<spool>/
    free = shutil.disk_usage(stage_dir).free
    if free < size + DISK_HEADROOM_BYTES:
        raise ArtifactNotStaged(
            errno.ENOSPC,
            f"trackbridge: cannot stage artifact {shown} ({size} bytes) for upload: {free} bytes"
            f" free in {stage_dir} (it must leave {DISK_HEADROOM_BYTES} for the spool); free"
            " some space or point TRACKBRIDGE_SPOOL_DIR at a larger disk",
        )


def stage_copy(
    stage_dir: Path,
    source: str | os.PathLike[str],
    run_key: str,
    artifact_path: str,
    destination: Destination | None,
    *,
    model_id: str = "",
) -> StagedArtifact:
    """Copies ``source`` aside (hashing it) and records it; raises ArtifactNotStaged."""
    name = os.path.basename(os.fspath(source))
    target = new_path(stage_dir, name)
    try:
        digest = hashlib.sha256()
        size = 0
        with open(source, "rb") as src:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "wb") as dst:
                while data := src.read(_COPY_BYTES):
                    digest.update(data)
                    dst.write(data)
                    size += len(data)
        return _record(
            run_key,
            artifact_path,
            target,
            size=size,
            sha256=digest.hexdigest(),
            destination=destination,
            model_id=model_id,
        )
    except BaseException as exc:
        shutil.rmtree(target.parent, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | IsADirectoryError):
            raise _not_staged(exc, name, stage_dir) from exc
        raise


def stage_written(
    target: Path,
    run_key: str,
    artifact_path: str,
    destination: Destination | None,
    *,
    model_id: str = "",
) -> StagedArtifact:
    """Records a file the caller wrote into ``new_path()``; raises ArtifactNotStaged."""
    try:
        os.chmod(target, 0o600)
        digest = hashlib.sha256()
        with target.open("rb") as f:
            while data := f.read(_COPY_BYTES):
                digest.update(data)
        size = target.stat().st_size
        return _record(
            run_key,
            artifact_path,
            target,
            size=size,
            sha256=digest.hexdigest(),
            destination=destination,
            model_id=model_id,
        )
    except OSError as exc:
        shutil.rmtree(target.parent, ignore_errors=True)
        raise _not_staged(exc, target.name, target.parent.parent) from exc


def _record(
    run_key: str,
    artifact_path: str,
    target: Path,
    *,
    size: int,
    sha256: str,
    destination: Destination | None,
    model_id: str,
) -> StagedArtifact:
    item = StagedArtifact(
        run_key, artifact_path, target.name, size, sha256, uuid.uuid4().hex, target, model_id
    )
    record = {k: v for k, v in asdict(item).items() if k != "path"}
    record["destination"] = asdict(destination) if destination is not None else None
    manifest = target.parent / MANIFEST
    part = target.parent / f"{MANIFEST}.part"
    fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    part.replace(manifest)
    return item


def _not_staged(exc: OSError, name: str, stage_dir: Path) -> ArtifactNotStaged:
    return ArtifactNotStaged(
        exc.errno or errno.EIO,
        f"trackbridge: cannot stage artifact {name} for upload in {stage_dir}:"
        f" {exc.strerror or exc}; nothing of it was kept",
    )


def load(manifest: Path) -> StagedArtifact | None:
    """The staged artifact a manifest describes; None if the manifest or its copy is unusable."""
    try:
        record = json.loads(manifest.read_text())
        item = StagedArtifact(
            str(record["run_key"]),
            str(record["artifact_path"]),
            str(record["file_name"]),
            int(record["size"]),
            str(record["sha256"]),
            str(record["upload_id"]),
            manifest.parent / str(record["file_name"]),
            str(record.get("model_id", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return item if item.path.is_file() else None


def discard(item: StagedArtifact) -> None:
    """Deletes a delivered (or refused) artifact's copy and manifest."""
    shutil.rmtree(item.path.parent, ignore_errors=True)


def remove_strays(stage_dir: Path) -> None:
    """Deletes copies that never got a manifest (their call did not return)."""
    if not stage_dir.is_dir():
        return
    for entry in stage_dir.iterdir():
        if entry.is_dir() and not (entry / MANIFEST).exists():
            shutil.rmtree(entry, ignore_errors=True)


class Damaged:
    """Set by :func:`chunks` when a staged copy no longer matches its recorded SHA-256."""

    def __init__(self) -> None:
        self.found = False


def chunks(
    item: StagedArtifact, client_id: str, job: str, damaged: Damaged
) -> Iterator[artifacts_pb2.ArtifactChunk]:
    """The upload stream of ``item``: header, 1 MiB data chunks with a CRC-32 each, trailer.

    The trailer carries the SHA-256 recorded at staging; a copy damaged since then is refused by
    the receiver (DATA_LOSS) and flagged in ``damaged``, so that it is not sent again.
    """
    yield artifacts_pb2.ArtifactChunk(
        header=artifacts_pb2.ArtifactHeader(
            client_id=client_id,
            job=job,
            run_key=item.run_key,
            upload_id=item.upload_id,
            artifact_path=item.artifact_path,
            file_name=item.file_name,
            size=item.size,
            sha256=item.sha256,
            model_id=item.model_id,
        )
    )
    digest = hashlib.sha256()
    offset = 0
    with item.path.open("rb") as f:
        while data := f.read(ARTIFACT_CHUNK_BYTES):
            digest.update(data)
            yield artifacts_pb2.ArtifactChunk(
                data=artifacts_pb2.ArtifactData(offset=offset, data=data, crc32=zlib.crc32(data))
            )
            offset += len(data)
    damaged.found = digest.hexdigest() != item.sha256 or offset != item.size
    yield artifacts_pb2.ArtifactChunk(trailer=artifacts_pb2.ArtifactTrailer(sha256=item.sha256))
