"""Zero-code mode, artifacts: the MLflow artifact repository for ``trackbridge://`` URIs.

Runs and logged models the ``trackbridge`` store hands out have artifact URIs
``trackbridge://host:port/runs/<run id>/artifacts`` and ``.../models/<model id>/artifacts``;
MLflow gives their uploads to this repository, which copies each file aside and returns while
the artifact thread streams it to the receiver (which uploads it with its own artifact-store
access). Listing and downloading go through the receiver too (``log_model``'s checks,
``load_model``, ``download_artifacts``), after this process's own files reached MLflow; while
the receiver is away, a run's listing shows what this process logged and small files it logged
recently can still be read back (what ``log_table`` needs to append).
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
from mlflow.protos import service_pb2 as pb
from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED
from mlflow.store.artifact.artifact_repo import ArtifactRepository, verify_artifact_path

from client_sdk._compat.relay import RelayError
from client_sdk._compat.session import RunRecord, Session
from client_sdk.plugin._calls import Unreachable, call, error
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
    """Artifacts of runs and logged models, through a trackbridge receiver."""

    def __init__(self, artifact_uri: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(artifact_uri, *args, **kwargs)
        self._session: Session = session_for(receiver_from_uri(artifact_uri))
        rest = artifact_uri.split("://", 1)[1].partition("/")[2]
        kind, _, rest = rest.partition("/")
        if kind not in ("runs", "models"):
            raise MlflowException(
                f"not a trackbridge artifact URI: {artifact_uri!r} (expected"
                " trackbridge://host:port/runs/<id>/artifacts or .../models/<id>/artifacts)"
            )
        owner, _, sub = rest.partition("/artifacts")
        self._model_id = owner if kind == "models" else ""
        self._run_id = owner if kind == "runs" else ""
        self._base = sub.strip("/")

    def _record(self) -> RunRecord | None:
        return self._session.find(self._run_id) if self._run_id else None

    def _dir(self, artifact_path: str | None) -> str:
        parts = [p for p in (self._base, artifact_path) if p]
        return posixpath.join(*parts) if parts else ""

    def _mlflow_run_id(self) -> str:
        record = self._record()
        return self._session.run_id(record) if record is not None else self._run_id

    # -- uploads -------------------------------------------------------------------------------

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        verify_artifact_path(artifact_path)  # type: ignore[no-untyped-call]
        directory = self._dir(artifact_path)
        if self._model_id:
            self._session.log_model_file(self._model_id, local_file, directory)
            return
        record = self._record()
        if record is None:
            raise MlflowException(
                f"run {self._run_id} was not started or resumed by this process: trackbridge"
                " sends files to runs it logs to",
                error_code=NOT_IMPLEMENTED,
            )
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

    # -- reads ---------------------------------------------------------------------------------

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        prefix = self._dir(path)
        try:
            if self._model_id:
                request: Any = pb.ListLoggedModelArtifacts(
                    model_id=self._model_id, artifact_directory_path=prefix or None
                )
                reply: Any = call(self._session, request, pb.ListLoggedModelArtifacts.Response)
            else:
                request = pb.ListArtifacts(run_id=self._mlflow_run_id(), path=prefix or None)
                reply = call(self._session, request, pb.ListArtifacts.Response)
        except Unreachable:
            record = self._record()
            if record is None:
                raise
            return _listing(record, prefix)
        found = [FileInfo.from_proto(f) for f in reply.files]
        # Paths relative to this repository's root, as MLflow's repositories return them.
        return [_relative(f, self._base) for f in found]

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        path = self._dir(remote_file_path)
        try:
            if self._model_id:
                self._session.download(Path(local_path), path=path, model_id=self._model_id)
            else:
                self._session.download(Path(local_path), path=path, run_id=self._mlflow_run_id())
            return
        except RelayError as exc:
            record = self._record()
            data = None
            if record is not None and not exc.reached:
                with _cache_lock:
                    data = _cache.get((record.key, path))
            if data is None:
                raise error(exc, self._session) from None
        Path(local_path).write_bytes(data)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        raise MlflowException(
            "delete_artifacts: artifacts logged through trackbridge are deleted with MLflow"
            " itself (the receiver holds the artifact store's access)",
            error_code=NOT_IMPLEMENTED,
        )


def _relative(info: FileInfo, base: str) -> FileInfo:
    if base and info.path.startswith(base + "/"):
        return FileInfo(info.path[len(base) + 1 :], info.is_dir, info.file_size)
    return info


def _listing(record: RunRecord, prefix: str) -> list[FileInfo]:
    """What this process logged under ``prefix`` (the receiver being away)."""
    entries: dict[str, FileInfo] = {}
    for logged, size in record.artifacts.items():
        if prefix and not logged.startswith(prefix + "/"):
            continue
        rest = logged[len(prefix) + 1 :] if prefix else logged
        head, sep, _ = rest.partition("/")
        full = posixpath.join(prefix, head) if prefix else head
        entries[full] = FileInfo(full, True, None) if sep else FileInfo(full, False, size)
    return [entries[k] for k in sorted(entries)]
