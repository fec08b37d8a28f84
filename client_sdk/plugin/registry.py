"""Zero-code mode, model registry: the ``trackbridge`` model-registry store, so that
``log_model(..., registered_model_name=...)`` and ``MlflowClient``'s registry calls work with a
``trackbridge://`` tracking (and so registry) URI.

MLflow's own REST registry store builds every request and parses every answer; only its
transport is replaced: each call travels as MLflow's protobuf message to the receiver, which
answers it with its registry store (see ``server/tracking/registry.py`` for what clients may
change). Its calls carry no ids in URL paths, unlike the tracking store's logged-model calls.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.json_format import ParseDict
from google.protobuf.message import Message
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED
from mlflow.store.model_registry.rest_store import RestStore

from client_sdk.plugin._calls import call
from client_sdk.plugin.store import receiver_from_uri, session_for


class TrackbridgeRegistryStore(RestStore):
    """The model-registry store behind ``trackbridge://`` registry URIs."""

    def __init__(self, store_uri: str | None = None, tracking_uri: str | None = None) -> None:
        super().__init__(_no_http)  # type: ignore[no-untyped-call]
        self._session = session_for(receiver_from_uri(store_uri or tracking_uri or ""))

    def _call_endpoint(
        self,
        api: Any,
        json_body: str | None = None,
        call_all_endpoints: bool = False,
        extra_headers: Any = None,
    ) -> Message:
        request = ParseDict(json.loads(json_body) if json_body else {}, api())
        response: Message = call(self._session, request, api.Response)
        return response


def _no_http() -> Any:
    raise MlflowException(
        "this registry call needs an HTTP connection to an MLflow server; through trackbridge"
        " the receiver answers the registry's calls (prompts and webhooks are not carried)",
        error_code=NOT_IMPLEMENTED,
    )
