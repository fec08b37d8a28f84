"""Files a logging call writes itself (``log_text``, ``log_dict``): where they go inside a run's
artifacts, and how a dict is written (as MLflow writes it)."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bridge.validation import verify_artifact_path
from client_sdk._artifacts import ArtifactSender


def split_artifact_file(artifact_file: str) -> tuple[str, str]:
    """(directory, file name) of a run-relative file path, checked as MLflow checks it."""
    norm = posixpath.normpath(artifact_file)
    directory = posixpath.dirname(norm)
    verify_artifact_path(directory or None)
    return directory, posixpath.basename(norm)


def write_dict(path: Path, dictionary: Mapping[str, Any], artifact_file: str) -> None:
    """YAML for ``.yml``/``.yaml`` files, else indented JSON with ``str()`` for the rest."""
    extension = os.path.splitext(artifact_file)[1]
    with open(path, "w") as f:  # the platform's encoding, as MLflow writes it
        if extension in (".yml", ".yaml"):
            import yaml

            yaml.dump(dictionary, f, indent=2, default_flow_style=False)
        else:
            json.dump(dictionary, f, indent=2, default=str)


def stage_written(
    files: ArtifactSender, run_key: str, artifact_file: str, write: Callable[[Path], object]
) -> None:
    """Has ``write(path)`` produce a file in the staging directory, then queues it for the
    run's ``artifact_file``; a failed write leaves nothing behind."""
    directory, name = split_artifact_file(artifact_file)
    path = files.new_path(name)
    try:
        write(path)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    files.stage_file(run_key, path, directory, name)
