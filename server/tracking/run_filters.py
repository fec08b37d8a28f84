"""Run keys inside search filters: a client that had no MLflow run id in time names its run by
its key, and a script puts that id into filter strings as well as into request fields
(``mlflow.load_table(..., run_ids=[run.info.run_id])`` searches ``attributes.run_id IN
(...)``; ``search_logged_models`` and ``search_model_versions`` take ``source_run_id`` and
``run_id`` clauses). The receiver puts the MLflow run id in place of each of the caller's keys
that such a clause compares with, and leaves every other literal as it is (a tag's value that
happens to equal a key is the tag's).

The filter is split by sqlparse, the tokenizer MLflow's own search grammar is parsed with; what
is written here is only which literals are compared with a run id column.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlparse
from sqlparse import tokens

_RUN_ID_COLUMNS = frozenset({"run_id", "source_run_id"})
_ATTRIBUTE_PREFIXES = frozenset({"attribute", "attributes", "attr", "run"})
"""MLflow's prefixes for a run's attributes (``tags.run_id`` is a tag, not the run's id)."""


def with_run_ids(filter_string: str, run_id_of_key: Callable[[str], str]) -> str:
    """The filter with each quoted literal compared with a run id column that is one of the
    caller's run keys (``run_id_of_key`` answers its MLflow run id, "" for anything else)
    replaced by that run id; the filter unchanged when there is none."""
    if not filter_string or not any(c in filter_string for c in _RUN_ID_COLUMNS):
        return filter_string
    parts: list[str] = []
    column: list[str] = []  # the dotted name being read, then the one last read
    in_name = changed = False
    leaves = (leaf for part in sqlparse.parse(filter_string) for leaf in part.flatten())  # type: ignore[no-untyped-call]
    for leaf in leaves:
        value = leaf.value
        dot = in_name and leaf.ttype is tokens.Punctuation and value == "."
        if leaf.ttype in tokens.Name or dot:
            column = [*column, value] if in_name else [value]
            in_name = True
        elif in_name and column[-1] == "." and leaf.ttype in tokens.Literal.String.Symbol:
            column.append(value)  # a quoted name after a dot: tags."my tag"
        else:
            in_name = False
            if leaf.ttype in tokens.Literal.String and _names_run_id(column):
                mlflow_id = run_id_of_key(value[1:-1])
                if mlflow_id:
                    value, changed = f"{value[0]}{mlflow_id}{value[-1]}", True
        parts.append(value)
    return "".join(parts) if changed else filter_string


def _names_run_id(column: list[str]) -> bool:
    names = [part.strip("`\"'").lower() for part in column if part != "."]
    if not names or names[-1] not in _RUN_ID_COLUMNS:
        return False
    return len(names) == 1 or (len(names) == 2 and names[0] in _ATTRIBUTE_PREFIXES)
