"""The Writer's artifact calls: files staged durably at the call, sent by a thread of their own."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bridge.validation import verify_artifact_path
from client_sdk._artifacts import ArtifactSender
from client_sdk._files import stage_written, write_dict
from client_sdk._handles import RunHandle


class ArtifactCalls:
    """``log_artifact``, ``log_artifacts``, ``log_text`` and ``log_dict`` of the Writer (which
    provides what is declared here)."""

    _artifacts: ArtifactSender
    _started: bool
    _target: Callable[[RunHandle | None], RunHandle]
    """The run a call logs to (the Writer's method)."""
    _start: Callable[[], None]
    """Starts the Writer's sender (the Writer's method)."""

    @property
    def artifacts(self) -> ArtifactSender:
        """The artifact sender (for layers that write files into its staging folder)."""
        return self._artifacts

    def log_artifact(
        self,
        local_path: str | os.PathLike[str],
        artifact_path: str | None = None,
        *,
        run: RunHandle | None = None,
    ) -> None:
        """Logs a file, or a directory (under ``artifact_path/<its name>``, as MLflow does).

        The file is copied aside, durably, before the call returns (you may delete it at once)
        and sent by a thread of its own; with a spool it survives the process and is delivered
        by the next writer of the same destination or ``trackbridge sync``.

        Raises:
            MlflowException: ``artifact_path`` is absolute or escapes the run's artifacts.
            FileNotFoundError: ``local_path`` does not exist.
            ArtifactNotStaged: Over the staging quota (``max_staged_artifact_bytes``), not
                enough free space, or an I/O error: nothing of it was kept (an ``OSError``).
        """
        path = os.fspath(local_path)
        verify_artifact_path(artifact_path)
        if os.path.isdir(path):
            name = os.path.basename(os.path.normpath(path))
            self.log_artifacts(
                path, posixpath.join(artifact_path, name) if artifact_path else name, run=run
            )
            return
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No such file or directory: '{path}'")
        target = self._target(run)
        if not self._started:
            self._start()
        self._artifacts.stage_copy(target.run_key, path, artifact_path or "")

    def log_artifacts(
        self,
        local_dir: str | os.PathLike[str],
        artifact_path: str | None = None,
        *,
        run: RunHandle | None = None,
    ) -> None:
        """Logs every file under a directory, keeping its layout under ``artifact_path``.

        The whole directory is checked against the quota and the free space first.

        Raises:
            As ``log_artifact`` (files staged before an I/O error stay staged).
        """
        verify_artifact_path(artifact_path)
        target = self._target(run)
        if not self._started:
            self._start()
        self._artifacts.stage_tree(target.run_key, local_dir, artifact_path or "")

    # -- files written by the call ----------------------------------------------------------

    def log_text(self, text: str, artifact_file: str, *, run: RunHandle | None = None) -> None:
        """Logs a string as a UTF-8 text file of the run's artifacts (``notes/a.txt``)."""
        self._log_written(artifact_file, lambda p: p.write_text(text, encoding="utf-8"), run)

    def log_dict(
        self, dictionary: Mapping[str, Any], artifact_file: str, *, run: RunHandle | None = None
    ) -> None:
        """Logs a dict as a file of the run's artifacts: YAML for ``.yml``/``.yaml``, else JSON."""
        self._log_written(artifact_file, lambda p: write_dict(p, dictionary, artifact_file), run)

    def _log_written(
        self, artifact_file: str, write: Callable[[Path], object], run: RunHandle | None
    ) -> None:
        target = self._target(run)
        if not self._started:
            self._start()
        stage_written(self._artifacts, target.run_key, artifact_file, write)
