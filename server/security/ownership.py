"""Whose run is it: a run is identified by its client and its run key, never by the key alone.

A client picks its run keys, and anyone who can read MLflow can read them (the
``trackbridge.run_key`` tag), so a key alone proves nothing. The receiver therefore scopes
every run key by the caller's authenticated client id (its token's or certificate's): its
local records (queue, live view, artifacts) use the *owned key* ``<client id>/<run key>``,
and MLflow runs are found again only by both tags, ``trackbridge.client_id`` and
``trackbridge.run_key``, which only receivers set. One client using another's run key then
writes to a run of its own, on every receiver alike, and the owner's batches are accepted
wherever they go.

Run keys may not contain ``/`` (clients make them from UUIDs), so an owned key splits
unambiguously at its last ``/`` even when a client id holds one (a URI name from a
certificate). A key without ``/`` is a record written before run keys were scoped; it stands
for itself.
"""

from __future__ import annotations

SEPARATOR = "/"


def owned_key(client_id: str, run_key: str) -> str:
    """The receiver's key for run ``run_key`` of client ``client_id``."""
    return f"{client_id}{SEPARATOR}{run_key}"


def client_run_key(key: str) -> str:
    """The client's own run key inside an owned key (a record from before scoping: itself)."""
    return key.rpartition(SEPARATOR)[2]


def run_key_problem(run_key: str) -> str | None:
    """Why a client's run key cannot be scoped, None when it can."""
    if SEPARATOR in run_key:
        return f"run_key may not contain {SEPARATOR!r}"
    return None
