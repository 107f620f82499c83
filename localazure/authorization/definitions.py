"""Role definitions (``{scope}/providers/Microsoft.Authorization/roleDefinitions``): Azure's
built-in roles, readable at any scope, and custom roles created, read, updated and deleted
through the API. Lists filter by ``roleName eq '...'`` and ``type eq '...'``; a custom role is
listed at the scopes it is assignable at (and, with ``atScopeAndBelow()``, above them too)."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import now_iso, subscription_id_or_404
from localazure.authorization import roles
from localazure.authorization.access import (
    ASSIGNMENT_KIND,
    covers,
    normalise_scope,
    require,
)
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request, conflict, not_found
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router

_SUBSCRIPTION_SCOPE = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)
_FILTER_CLAUSE = re.compile(r"^\s*(roleName|type)\s+eq\s+'([^']*)'\s*$", re.IGNORECASE)
_SCOPE_CLAUSE = re.compile(r"^\s*atScopeAndBelow\(\)\s*$", re.IGNORECASE)
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
WRITE = "Microsoft.Authorization/roleDefinitions/write"
DELETE = "Microsoft.Authorization/roleDefinitions/delete"


def role_definition_id(subscription_id: str, role_guid: str) -> str:
    """The id ARM stores in role assignments for a role."""
    return f"/subscriptions/{subscription_id}/providers/{roles.ROLE_DEFINITION_TYPE}/{role_guid}"


def role_definition_not_found(role_id: str) -> AzureError:
    return not_found(
        "RoleDefinitionDoesNotExist",
        f"The specified role definition with ID '{role_id}' does not exist.",
    )


def _home(ctx: Context, scope: str) -> str:
    """Roles are returned under the subscription of the scope, or the tenant root."""
    match = _SUBSCRIPTION_SCOPE.match(scope)
    if not match:
        return "/"
    return f"/subscriptions/{subscription_id_or_404(ctx, match.group(1))}"


def _parse_filter(raw: str) -> tuple[dict[str, str], bool]:
    """``(clauses, and_below)`` from a ``$filter``."""
    clauses: dict[str, str] = {}
    and_below = False
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE) if raw.strip() else []:
        if _SCOPE_CLAUSE.match(clause):
            and_below = True
            continue
        match = _FILTER_CLAUSE.match(clause)
        if not match:
            raise bad_request(
                "UnsupportedQuery",
                f"The filter '{raw}' is not supported. Supported filters are 'roleName eq "
                "'{value}'', 'type eq '{value}'' and 'atScopeAndBelow()'.",
            )
        clauses[match.group(1).lower()] = match.group(2)
    return clauses, and_below


def _selected(role: dict[str, Any], clauses: dict[str, str]) -> bool:
    if "rolename" in clauses and clauses["rolename"].lower() != role["roleName"].lower():
        return False
    return "type" not in clauses or clauses["type"].lower() == role["roleType"].lower()


def _visible_at(role: dict[str, Any], scope: str, and_below: bool) -> bool:
    """A role is listed where it can be assigned: at or below one of its assignable scopes (and,
    for ``atScopeAndBelow()``, also where one of them lies below ``scope``)."""
    return any(
        covers(assignable, scope) or (and_below and covers(scope, assignable))
        for assignable in role["assignableScopes"]
    )


def _checked_guid(role_id: str) -> str:
    if not _GUID.match(role_id):
        raise bad_request(
            "InvalidRoleDefinitionId",
            f"The role definition ID '{role_id}' is not valid. The role definition ID must be a "
            "GUID.",
        )
    return role_id.lower()


def _requested_role(ctx: Context, guid: str, body: dict[str, Any]) -> dict[str, Any]:
    props = body.get("properties")
    props = props if isinstance(props, dict) else {}
    role_name = str(props.get("roleName") or "").strip()
    if not role_name:
        raise bad_request("InvalidRoleDefinition", "The role definition name must be specified.")
    scopes = props.get("assignableScopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise bad_request(
            "InvalidRoleDefinition",
            "The role definition must have at least one assignable scope.",
        )
    permissions = props.get("permissions")
    if not isinstance(permissions, list):
        permissions = []
    blocks = []
    for block in permissions:
        block = block if isinstance(block, dict) else {}
        blocks.append(
            {
                key: [str(op) for op in block.get(key) or []]
                for key in ("actions", "notActions", "dataActions", "notDataActions")
            }
        )
    for other in roles.built_in_roles() + roles.custom_roles(ctx):
        if other["roleName"].lower() == role_name.lower() and other["name"] != guid:
            raise conflict(
                "RoleDefinitionWithSameNameExists",
                "A custom role with the same name already exists in this directory. Use a "
                "different name.",
            )
    return {
        "name": guid,
        "roleName": role_name,
        "roleType": roles.CUSTOM_ROLE,
        "description": props.get("description") or "",
        "assignableScopes": [normalise_scope(s) or "/" for s in scopes],
        "permissions": blocks,
    }


def register(router: Router, ctx: Context) -> None:
    async def list_definitions(request: Request, scope: str) -> Response:
        require_api_version(request)
        scope = normalise_scope(scope)
        home = _home(ctx, scope)
        clauses, and_below = _parse_filter(request.query_params.get("$filter", ""))
        visible = roles.built_in_roles() + [
            role for role in roles.custom_roles(ctx) if _visible_at(role, scope, and_below)
        ]
        items = [roles.definition_body(home, r) for r in visible if _selected(r, clauses)]
        return json_response(list_page(items))

    async def get_definition(request: Request, scope: str, role_id: str) -> Response:
        require_api_version(request)
        scope = normalise_scope(scope)
        role = roles.find(ctx, role_id)
        if role is None:
            raise role_definition_not_found(role_id)
        return json_response(roles.definition_body(_home(ctx, scope), role))

    async def put_definition(request: Request, scope: str, role_id: str) -> Response:
        require_api_version(request)
        scope, guid = normalise_scope(scope), _checked_guid(role_id)
        home = _home(ctx, scope)
        caller = request.state.caller
        if roles.built_in(guid) is not None:
            raise AzureError(
                403,
                "RoleDefinitionUpdateNotAllowed",
                f"The built-in role definition '{guid}' cannot be changed.",
            )
        wanted = _requested_role(ctx, guid, await json_body(request))
        for assignable in [scope or "/", *wanted["assignableScopes"]]:
            require(
                ctx,
                caller,
                WRITE,
                f"{assignable.rstrip('/')}/providers/{roles.ROLE_DEFINITION_TYPE}/{guid}",
            )
        with ctx.store.transaction():
            existing = ctx.store.get(roles.CUSTOM_ROLE_KIND, guid)
            stamp = now_iso()
            record = {
                **wanted,
                "createdOn": existing["createdOn"] if existing else stamp,
                "createdBy": existing["createdBy"] if existing else caller.object_id,
                "updatedOn": stamp,
                "updatedBy": caller.object_id,
            }
            ctx.store.put(roles.CUSTOM_ROLE_KIND, guid, record)
        return json_response(roles.definition_body(home, record), 201)

    async def delete_definition(request: Request, scope: str, role_id: str) -> Response:
        require_api_version(request)
        scope = normalise_scope(scope)
        home = _home(ctx, scope)
        caller = request.state.caller
        if roles.built_in(role_id) is not None:
            raise AzureError(
                403,
                "RoleDefinitionUpdateNotAllowed",
                f"The built-in role definition '{role_id}' cannot be deleted.",
            )
        record = ctx.store.get(roles.CUSTOM_ROLE_KIND, role_id.lower())
        if record is None:
            return empty(204)
        require(
            ctx,
            caller,
            DELETE,
            f"{home.rstrip('/')}/providers/{roles.ROLE_DEFINITION_TYPE}/{record['name']}",
        )
        for assignment in ctx.store.values(ASSIGNMENT_KIND):
            if (
                roles.role_guid_from_definition_id(assignment["properties"]["roleDefinitionId"])
                == record["name"]
            ):
                raise conflict(
                    "RoleDefinitionHasAssignments",
                    "There are existing role assignments referencing role (code: "
                    "RoleDefinitionHasAssignments).",
                )
        ctx.store.delete(roles.CUSTOM_ROLE_KIND, record["name"])
        return json_response(roles.definition_body(home, record))

    prefix = "{scope:path}/providers/Microsoft.Authorization/roleDefinitions"
    router.add("GET", prefix, list_definitions)
    router.add("GET", prefix + "/{role_id}", get_definition)
    router.add("PUT", prefix + "/{role_id}", put_definition)
    router.add("DELETE", prefix + "/{role_id}", delete_definition)
