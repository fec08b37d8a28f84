"""Who may read what: a caller's read scope (its own runs, its job's, or all) and the checks
and search filters that enforce it.

Runs and logged models carry the ``trackbridge.client_id`` and ``trackbridge.job`` tags the
receiver sets when it creates them; a caller sees an entity whose tags match its scope.
Experiments' metadata (name, id, tags) is visible to every caller, as a client may log into
any experiment by name; their runs and models are scoped. A viewer token reads everything and
writes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

TAG_CLIENT_ID = "trackbridge.client_id"
TAG_JOB = "trackbridge.job"
TAG_ROLE = "trackbridge.role"


class ReadScope(enum.Enum):
    """How far a client's reads reach (``trackbridge serve --read-scope``)."""

    OWN = "own"
    """Runs and models this client id created."""
    JOB = "job"
    """Runs and models of the client's job (every client of it)."""
    ALL = "all"
    """Everything in the receiver's MLflow."""


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated caller of one tracking call."""

    client_id: str
    job: str
    scope: ReadScope
    viewer: bool = False
    """Called with the viewer token: reads everything, writes nothing."""

    @property
    def reads_all(self) -> bool:
        """Whether every run and model is visible."""
        return self.viewer or self.scope is ReadScope.ALL

    def sees(self, tags: Mapping[str, str]) -> bool:
        """Whether an entity (run or logged model) with these tags is visible."""
        if self.reads_all:
            return True
        if self.scope is ReadScope.OWN:
            return tags.get(TAG_CLIENT_ID) == self.client_id
        return tags.get(TAG_JOB) == self.job

    def owns(self, tags: Mapping[str, str]) -> bool:
        """Whether the caller may change an entity with these tags (its own, never a viewer)."""
        return not self.viewer and tags.get(TAG_CLIENT_ID) == self.client_id

    def run_filter(self, filter_string: str) -> str:
        """A search_runs filter limited to the scope (MLflow's grammar is a conjunction, so
        ANDing a clause cannot be escaped). Within a job or a client's runs, the job's parent
        runs (the bridge's bookkeeping, which the MLflow UI shows as the tree's roots) are left
        out, so that a script's searches find the runs it and its peers logged."""
        clause = self._clause()
        if clause is None:
            return filter_string
        return f"{filter_string} and {clause}" if filter_string.strip() else clause

    def _clause(self) -> str | None:
        if self.reads_all:
            return None
        clients = f"tags.`{TAG_ROLE}` = 'client'"
        if self.scope is ReadScope.OWN:
            return f"tags.`{TAG_CLIENT_ID}` = '{_quote(self.client_id)}' and {clients}"
        return f"tags.`{TAG_JOB}` = '{_quote(self.job)}' and {clients}"

    def refuse(self, what: str) -> MlflowException:
        """The error for an entity outside the scope."""
        reach = {
            ReadScope.OWN: f"the runs of client {self.client_id!r}",
            ReadScope.JOB: f"the runs of job {self.job!r}",
            ReadScope.ALL: "everything",
        }[self.scope]
        return MlflowException(
            f"{what} is outside what this client may read through the receiver ({reach};"
            " the receiver's --read-scope, or a viewer token, reach further)",
            error_code=PERMISSION_DENIED,
        )

    def refuse_write(self, what: str) -> MlflowException:
        """The error for a change to something that is not the caller's."""
        who = "a viewer token" if self.viewer else f"client {self.client_id!r}"
        return MlflowException(
            f"{what} was not created by {who}: clients change only their own runs and models",
            error_code=PERMISSION_DENIED,
        )


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
