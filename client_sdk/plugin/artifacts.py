"""Zero-code mode, artifacts: the MLflow artifact repository for ``trackbridge://`` URIs.

Runs created through the ``trackbridge`` tracking store have artifact URIs
``trackbridge://host:port/runs/<run id>/artifacts``; MLflow hands their ``log_artifact`` calls
to this repository, which copies the file aside and returns while the artifact thread streams
it to the receiver. Listing shows what this process logged; downloading serves the small files
it logged recently (what ``log_table`` needs to append), and otherwise names the MLflow server.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from mlflow.entities import FileInfo
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED
from mlflow.store.artifact.artifact_repo import ArtifactRepository, verify_artifact_path

from client_sdk._compat.session import RunRecord, Session
from client_sdk.plugin.store import receiver_from_uri, session_for

_CACHE_FILE_BYTES = 4 * 1024 * 1024
_CACHE_TOTAL_BYTES = 64 * 1024 * 1024
_cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_cache_lock = threading.Lock()


def _remember(run_key: str, path: str, local_file: str) -> None:
    size = os.path.getsize(local_file)
    if size > _CACHE_FILE_BYTES:
        return
    data = Path(local_file).read_bytes()
    with _cache_lock:
        _cache[(run_key, path)] = data
        _cache.move_to_end((run_key, path))
        while sum(len(v) for v in _cache.values()) > _CACHE_TOTAL_BYTES:
            _cache.popitem(last=False)


class TrackbridgeArtifactRepository(ArtifactRepository):
    """Artifacts of runs logged through a trackbridge receiver."""

    def __init__(self, artifact_uri: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(artifact_uri, *args, **kwargs)
        self._session: Session = session_for(receiver_from_uri(artifact_uri))
        _, _, rest = artifact_uri.partition("/runs/")
        run_id, _, sub = rest.partition("/artifacts")
        self._run_id = run_id
        self._base = sub.strip("/")

    def _record(self) -> RunRecord:
        record = self._session.find(self._run_id)
        if record is None:
            raise MlflowException(
                self._session.read_error(f"artifacts of run {self._run_id}"),
                error_code=NOT_IMPLEMENTED,
            )
        return record

    def _dir(self, artifact_path: str | None) -> str:
        parts = [p for p in (self._base, artifact_path) if p]
        return posixpath.join(*parts) if parts else ""

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        verify_artifact_path(artifact_path)  # type: ignore[no-untyped-call]
        record = self._record()
        directory = self._dir(artifact_path)
        self._session.log_file(record, local_file, directory)
        name = os.path.basename(local_file)
        _remember(record.key, posixpath.join(directory, name) if directory else name, local_file)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        verify_artifact_path(artifact_path)  # type: ignore[no-untyped-call]
        for root, _dirs, files in os.walk(local_dir):
            relative = os.path.relpath(root, local_dir)
            sub = "" if relative == "." else relative.replace(os.sep, "/")
            parts = [p for p in (artifact_path, sub) if p]
            target = posixpath.join(*parts) if parts else None
            for name in sorted(files):
                self.log_artifact(os.path.join(root, name), target)

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        record = self._record()
        prefix = self._dir(path)
        entries: dict[str, FileInfo] = {}
        for logged, size in record.artifacts.items():
            if prefix and not logged.startswith(prefix + "/"):
                continue
            rest = logged[len(prefix) + 1 :] if prefix else logged
            head, sep, _ = rest.partition("/")
            full = posixpath.join(prefix, head) if prefix else head
            entries[full] = FileInfo(full, True, None) if sep else FileInfo(full, False, size)
        return [entries[k] for k in sorted(entries)]

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        record = self._record()
        with _cache_lock:
            data = _cache.get((record.key, self._dir(remote_file_path)))
        if data is None:
            raise MlflowException(
                self._session.read_error(f"downloading artifact {remote_file_path!r}"),
                error_code=NOT_IMPLEMENTED,
            )
        Path(local_path).write_bytes(data)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        raise MlflowException(
            self._session.read_error("delete_artifacts"), error_code=NOT_IMPLEMENTED
        )
