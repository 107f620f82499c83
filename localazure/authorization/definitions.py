"""Role definitions (``{scope}/providers/Microsoft.Authorization/roleDefinitions``): the built-in
roles, readable at any scope, filtered by ``roleName eq '...'`` and ``type eq '...'``."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import subscription_id_or_404
from localazure.authorization.access import normalise_scope
from localazure.authorization.roles import BY_ID, ROLE_DEFINITION_TYPE, definition_body
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request, not_found
from localazure.core.http import json_response, list_page, require_api_version
from localazure.core.router import Router

_SUBSCRIPTION_SCOPE = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)
_FILTER_CLAUSE = re.compile(r"^\s*(roleName|type)\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)
_SCOPE_CLAUSE = re.compile(r"^\s*atScopeAndBelow\(\)\s*$", re.IGNORECASE)
BUILT_IN_ROLE = "BuiltInRole"


def role_definition_id(subscription_id: str, role_guid: str) -> str:
    """The id ARM stores in role assignments for a built-in role."""
    return f"/subscriptions/{subscription_id}/providers/{ROLE_DEFINITION_TYPE}/{role_guid}"


def role_definition_not_found(role_id: str) -> AzureError:
    return not_found(
        "RoleDefinitionDoesNotExist",
        f"The specified role definition with ID '{role_id}' does not exist.",
    )


def _home(ctx: Context, scope: str) -> str:
    """Built-in roles are returned under the subscription of the scope, or the tenant root."""
    match = _SUBSCRIPTION_SCOPE.match(scope)
    if not match:
        return ""
    return f"/subscriptions/{subscription_id_or_404(ctx, match.group(1))}"


def _body(ctx: Context, scope: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return definition_body(ctx.subscription_id, _home(ctx, scope) or "/", name, spec)


def _matches(clauses: dict[str, str], name: str) -> bool:
    if "rolename" in clauses and clauses["rolename"].lower() != name.lower():
        return False
    return "type" not in clauses or clauses["type"].lower() == BUILT_IN_ROLE.lower()


def _parse_filter(raw: str) -> dict[str, str]:
    clauses: dict[str, str] = {}
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE) if raw.strip() else []:
        if _SCOPE_CLAUSE.match(clause):
            continue  # built-in roles are assignable everywhere: below the scope adds nothing
        match = _FILTER_CLAUSE.match(clause)
        if not match:
            raise bad_request(
                "UnsupportedQuery",
                f"The filter '{raw}' is not supported. Supported filters are 'roleName eq "
                "'{value}'', 'type eq '{value}'' and 'atScopeAndBelow()'.",
            )
        clauses[match.group(1).lower()] = match.group(2)
    return clauses


def register(router: Router, ctx: Context) -> None:
    async def list_definitions(request: Request, scope: str) -> Response:
        require_api_version(request)
        scope = normalise_scope(scope)
        clauses = _parse_filter(request.query_params.get("$filter", ""))
        items = [
            _body(ctx, scope, name, spec)
            for name, spec in BY_ID.values()
            if _matches(clauses, name)
        ]
        return json_response(list_page(items))

    async def get_definition(request: Request, scope: str, role_id: str) -> Response:
        require_api_version(request)
        scope = normalise_scope(scope)
        found = BY_ID.get(role_id.lower())
        if found is None:
            raise role_definition_not_found(role_id)
        name, spec = found
        return json_response(_body(ctx, scope, name, spec))

    prefix = "{scope:path}/providers/Microsoft.Authorization/roleDefinitions"
    router.add("GET", prefix, list_definitions)
    router.add("GET", prefix + "/{role_id}", get_definition)
