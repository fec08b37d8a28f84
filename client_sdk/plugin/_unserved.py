"""What the zero-code store does not carry, method by method, each with MLflow's
NOT_IMPLEMENTED and the reason (MLflow's AbstractStore would otherwise raise a bare
NotImplementedError, or return None from an "abstract" method).
``tests/compat/test_store_surface.py`` compares these lists with MLflow's AbstractStore, so a
method a new MLflow adds is noticed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from client_sdk.plugin._calls import GENAI_REASON, not_carried

EXPERIMENT_CHANGES = (
    "delete_experiment",
    "rename_experiment",
    "restore_experiment",
)
"""Deleting, restoring and renaming experiments: every job's runs share them."""

GENAI = (
    "_delete_traces",
    "_load_dataset_records",
    "add_dataset_to_experiments",
    "add_guardrail_to_endpoint",
    "add_items_to_review_queue",
    "archive_traces",
    "attach_model_to_endpoint",
    "batch_get_trace_infos",
    "batch_get_traces",
    "calculate_trace_filter_correlation",
    "create_assessment",
    "create_budget_policy",
    "create_dataset",
    "create_endpoint_binding",
    "create_gateway_endpoint",
    "create_gateway_guardrail",
    "create_gateway_model_definition",
    "create_gateway_secret",
    "create_issue",
    "create_label_schema",
    "create_mcp_access_endpoint",
    "create_mcp_server",
    "create_mcp_server_version",
    "create_review_queue",
    "delete_assessment",
    "delete_budget_policy",
    "delete_dataset",
    "delete_dataset_records",
    "delete_dataset_tag",
    "delete_endpoint_binding",
    "delete_gateway_endpoint",
    "delete_gateway_endpoint_tag",
    "delete_gateway_guardrail",
    "delete_gateway_model_definition",
    "delete_gateway_secret",
    "delete_label_schema",
    "delete_mcp_access_endpoint",
    "delete_mcp_server",
    "delete_mcp_server_alias",
    "delete_mcp_server_tag",
    "delete_mcp_server_version",
    "delete_mcp_server_version_tag",
    "delete_review_queue",
    "delete_scorer",
    "delete_trace_tag",
    "detach_model_from_endpoint",
    "find_completed_sessions",
    "get_active_online_scorers",
    "get_assessment",
    "get_budget_policy",
    "get_dataset",
    "get_dataset_experiment_ids",
    "get_gateway_endpoint",
    "get_gateway_guardrail",
    "get_gateway_model_definition",
    "get_issue",
    "get_label_schema",
    "get_label_schema_by_name",
    "get_latest_mcp_server_version",
    "get_mcp_access_endpoint",
    "get_mcp_server",
    "get_mcp_server_version",
    "get_mcp_server_version_by_alias",
    "get_mcp_server_versions_for_trace",
    "get_online_scoring_configs",
    "get_online_trace_details",
    "get_or_create_user_queue",
    "get_review_queue",
    "get_review_queue_by_name",
    "get_scorer",
    "get_secret_info",
    "get_trace",
    "get_trace_info",
    "link_mcp_server_versions_to_trace",
    "link_prompts_to_trace",
    "link_traces_to_run",
    "list_budget_policies",
    "list_endpoint_bindings",
    "list_endpoint_guardrail_configs",
    "list_gateway_endpoints",
    "list_gateway_guardrails",
    "list_gateway_model_definitions",
    "list_label_schemas",
    "list_review_queue_items",
    "list_review_queues",
    "list_scorer_versions",
    "list_scorers",
    "list_secret_infos",
    "log_spans",
    "query_trace_metrics",
    "register_scorer",
    "remove_dataset_from_experiments",
    "remove_guardrail_from_endpoint",
    "remove_items_from_review_queue",
    "search_datasets",
    "search_issues",
    "search_mcp_access_endpoints",
    "search_mcp_server_versions",
    "search_mcp_servers",
    "search_traces",
    "set_dataset_tags",
    "set_gateway_endpoint_tag",
    "set_mcp_server_alias",
    "set_mcp_server_tag",
    "set_mcp_server_version_tag",
    "set_review_queue_item_status",
    "set_trace_tag",
    "start_trace",
    "sum_gateway_trace_cost",
    "unlink_traces_from_run",
    "update_assessment",
    "update_budget_policy",
    "update_endpoint_guardrail_config",
    "update_gateway_endpoint",
    "update_gateway_model_definition",
    "update_gateway_secret",
    "update_issue",
    "update_label_schema",
    "update_mcp_access_endpoint",
    "update_mcp_server",
    "update_mcp_server_version",
    "update_review_queue",
    "upsert_dataset_records",
    "upsert_online_scoring_config",
)
"""Traces, assessments, issues, scorers, label schemas, review queues, evaluation datasets,
the AI gateway and the MCP registry."""

_EXPERIMENT_REASON = (
    "experiments are shared by every job logging through the receiver, so clients name and"
    " create them but do not delete, restore or rename them (do that with MLflow itself)"
)


def _refusal(name: str, reason: str) -> Callable[..., NoReturn]:
    def refuse(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
        raise not_carried(name, reason)

    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = f"Raises MlflowException (NOT_IMPLEMENTED): {reason}."
    return refuse


class Unserved:
    """The refusals (a mixin of TrackbridgeStore, ahead of MLflow's AbstractStore)."""


for _name in EXPERIMENT_CHANGES:
    setattr(Unserved, _name, _refusal(_name, _EXPERIMENT_REASON))
for _name in GENAI:
    setattr(Unserved, _name, _refusal(_name, GENAI_REASON))
