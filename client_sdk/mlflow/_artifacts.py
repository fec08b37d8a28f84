"""The artifact calls of ``client_sdk.mlflow``: files are written (or copied) aside at the call
and streamed to the receiver by the artifact thread; the call never waits for the network.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

from bridge.validation import verify_artifact_path
from client_sdk._compat.session import RunRecord, now_ms
from client_sdk._files import write_dict
from client_sdk.mlflow._media import (
    append_table,
    compress_image,
    table_frame,
    to_pil,
    write_figure,
    write_table,
)
from client_sdk.mlflow._state import STATE

_LOGGED_ARTIFACTS = "mlflow.loggedArtifacts"
_LOGGED_IMAGES = "mlflow.loggedImages"
_IMAGE_KEY_RE = re.compile(r"^[a-zA-Z0-9_\-./ ]+$")


def _split(artifact_file: str) -> tuple[str, str]:
    """(directory, file name) of a run-relative file path, checked as MLflow checks it."""
    norm = posixpath.normpath(artifact_file)
    directory = posixpath.dirname(norm)
    verify_artifact_path(directory or None)
    return directory, posixpath.basename(norm)


def _write(record: RunRecord, artifact_file: str, write: Any) -> None:
    """Has ``write(path)`` produce the file, then sends it to ``artifact_file``."""
    directory, name = _split(artifact_file)
    session = STATE.session()
    path = session.artifacts.new_path(name)
    try:
        write(path)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    session.log_staged(record, path, directory, name)


def log_artifact(
    local_path: str | os.PathLike[str], artifact_path: str | None = None, run_id: str | None = None
) -> None:
    """Logs a file (copied now; the caller may delete it at once) or a directory."""
    record = STATE.run(run_id)
    path = os.fspath(local_path)
    if os.path.isdir(path):
        name = os.path.basename(os.path.normpath(path))
        _log_tree(record, path, posixpath.join(artifact_path, name) if artifact_path else name)
        return
    verify_artifact_path(artifact_path)
    STATE.session().log_file(record, path, artifact_path or "")


def log_artifacts(
    local_dir: str | os.PathLike[str], artifact_path: str | None = None, run_id: str | None = None
) -> None:
    """Logs every file under a directory, keeping its layout under ``artifact_path``."""
    _log_tree(STATE.run(run_id), os.fspath(local_dir), artifact_path)


def _log_tree(record: RunRecord, local_dir: str, artifact_path: str | None) -> None:
    verify_artifact_path(artifact_path)
    session = STATE.session()
    for root, _dirs, files in os.walk(local_dir):
        relative = os.path.relpath(root, local_dir)
        parts = [p for p in (artifact_path, "" if relative == "." else relative) if p]
        directory = posixpath.join(*[p.replace(os.sep, "/") for p in parts]) if parts else ""
        for name in sorted(files):
            session.log_file(record, os.path.join(root, name), directory)


def log_text(text: str, artifact_file: str, run_id: str | None = None) -> None:
    """Logs a string as a UTF-8 text file."""
    record = STATE.run(run_id)

    def write(path: Any) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    _write(record, artifact_file, write)


def log_stream(stream: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Logs a binary file-like object (``io.BytesIO``, an open file) as a file, read now."""
    record = STATE.run(run_id)

    def write(path: Any) -> None:
        with open(path, "wb") as f:
            shutil.copyfileobj(stream, f)

    _write(record, artifact_file, write)


def log_dict(dictionary: Mapping[str, Any], artifact_file: str, run_id: str | None = None) -> None:
    """Logs a dict as YAML (``.yml``/``.yaml``) or JSON (anything else)."""
    record = STATE.run(run_id)
    _write(record, artifact_file, lambda path: write_dict(path, dictionary, artifact_file))


def log_figure(
    figure: Any, artifact_file: str, *, save_kwargs: Mapping[str, Any] | None = None
) -> None:
    """Logs a matplotlib (or plotly) figure in the format of the file's extension."""
    record = STATE.run(None)
    _write(record, artifact_file, lambda p: write_figure(p, figure, artifact_file, save_kwargs))


def log_image(  # noqa: PLR0917 - MLflow's signature
    image: Any,
    artifact_file: str | None = None,
    key: str | None = None,
    step: int | None = None,
    timestamp: int | None = None,
    synchronous: bool | None = False,
) -> None:
    """Logs a numpy array or PIL image as a file, or (``key``) as a step of an image series."""
    record = STATE.run(None)
    if artifact_file is not None and any(arg is not None for arg in (key, step, timestamp)):
        raise TypeError(
            "The `artifact_file` parameter cannot be used in conjunction with `key`, "
            "`step`, or `timestamp` parameters. Please ensure that `artifact_file` is "
            "specified alone, without any of these conflicting parameters."
        )
    if artifact_file is None and key is None:
        raise TypeError(
            "Invalid arguments: Please specify exactly one of `artifact_file` or `key`. Use "
            "`key` to log dynamic image charts or `artifact_file` for saving static images. "
        )
    picture = to_pil(image)
    if artifact_file is not None:
        _write(record, artifact_file, picture.save)
        return
    assert key is not None
    if not _IMAGE_KEY_RE.match(key):
        raise ValueError(
            "The `key` parameter may only contain alphanumerics, underscores (_), "
            "dashes (-), periods (.), spaces ( ), and slashes (/)."
            f"The provided key `{key}` contains invalid characters."
        )
    base = (
        f"images/{key.replace('/', '~')}+step+{step or 0}+timestamp+{timestamp or now_ms()}"
        f"+{uuid.uuid4()}"
    )
    _write(record, f"{base}.png", picture.save)
    _write(record, f"{base}+compressed.webp", compress_image(picture).save)
    STATE.session().set_tags(record, [(_LOGGED_IMAGES, "True")])


def log_table(data: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Logs a dict or pandas DataFrame as a table file; logging again to the same file of the
    same run appends to it (for tables this process logged there)."""
    record = STATE.run(run_id)
    frame = table_frame(data, artifact_file)
    tables = _tables(record)
    if artifact_file in tables:
        frame = append_table(tables[artifact_file], frame)
    tables[artifact_file] = frame
    _write(record, artifact_file, lambda path: write_table(path, frame, artifact_file))
    logged = json.loads(record.tags.get(_LOGGED_ARTIFACTS, "[]"))
    entry = {"path": artifact_file, "type": "table"}
    if entry not in logged:
        logged.append(entry)
        STATE.session().set_tags(record, [(_LOGGED_ARTIFACTS, json.dumps(logged))])


_TABLES: dict[str, dict[str, Any]] = {}


def _tables(record: RunRecord) -> dict[str, Any]:
    return _TABLES.setdefault(record.key, {})
