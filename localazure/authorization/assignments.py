"""Role assignments (``{scope}/providers/Microsoft.Authorization/roleAssignments/{name}``): create,
get, list at a scope (with ``atScope()``, ``principalId eq '...'`` and ``assignedTo('...')``) and
delete, validated and authorized as Azure does. Records live in the store under
``ASSIGNMENT_KIND``, keyed by the assignment's GUID (unique in the tenant), in ARM shape."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import now_iso, resource_group_or_404, subscription_id_or_404
from localazure.authorization import roles
from localazure.authorization.access import ASSIGNMENT_KIND, covers, normalise_scope
from localazure.authorization.definitions import role_definition_id
from localazure.core.context import Context
from localazure.core.errors import bad_request, conflict, not_found, resource_not_found
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.identity import principals

ASSIGNMENT_TYPE = "Microsoft.Authorization/roleAssignments"
READ = "Microsoft.Authorization/roleAssignments/read"
WRITE = "Microsoft.Authorization/roleAssignments/write"
DELETE = "Microsoft.Authorization/roleAssignments/delete"
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")
# Managed identities are service principals to Azure RBAC.
_DIRECTORY_TYPES = {"serviceprincipal": "ServicePrincipal", "managedidentity": "ServicePrincipal"}
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_ROLE_DEFINITION_ID = re.compile(
    r"^(?:/subscriptions/([^/]+))?/providers/Microsoft\.Authorization/roleDefinitions/([^/]+)$",
    re.IGNORECASE,
)
_AT_SCOPE = re.compile(r"^atScope\(\)$", re.IGNORECASE)
_PRINCIPAL_FILTER = re.compile(r"^(?:principalId\s+eq\s+'([^']*)'|assignedTo\('([^']*)'\))$", re.I)
# Fixed, so that the development principal's grant keeps its id across restarts and resets.
DEVELOPMENT_OWNER_ASSIGNMENT = str(uuid.uuid5(uuid.NAMESPACE_URL, "localazure:development:owner"))


def assignment_id(scope: str, name: str) -> str:
    return f"{scope}/providers/{ASSIGNMENT_TYPE}/{name}"


def assignment_body(
    scope: str, name: str, properties: dict[str, Any], created_by: str | None
) -> dict[str, Any]:
    stamp = now_iso()
    return {
        "id": assignment_id(scope, name),
        "name": name,
        "type": ASSIGNMENT_TYPE,
        "properties": {
            **properties,
            "scope": scope or "/",
            "createdOn": stamp,
            "updatedOn": stamp,
            "createdBy": created_by,
            "updatedBy": created_by,
        },
    }


# -- validation -------------------------------------------------------------------------------


def _checked_name(name: str) -> str:
    if not _GUID.match(name):
        raise bad_request(
            "InvalidRoleAssignmentId",
            f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID.",
        )
    return name.lower()


def existing_scope(ctx: Context, scope: str) -> str:
    """Check that ``scope`` exists; return it with the casing ARM keeps (``""`` is the root)."""
    parts = scope.strip("/").split("/") if scope else []
    if not parts:
        return ""
    if parts[0].lower() != "subscriptions" or len(parts) < 2:
        raise bad_request("InvalidScope", f"The scope '{scope}' is not valid for role assignments.")
    subscription_id_or_404(ctx, parts[1])
    if len(parts) == 2:
        return f"/subscriptions/{ctx.subscription_id}"
    if parts[2].lower() == "resourcegroups" and len(parts) >= 4:
        group = resource_group_or_404(ctx, parts[1], parts[3])
        if len(parts) == 4:
            return group["id"]
    resource = ctx.store.get_resource(scope)
    if resource is not None:
        return resource["id"]
    if len(parts) >= 8 and parts[2].lower() == "resourcegroups" and parts[4].lower() == "providers":
        tail = parts[6:]
        resource_type = "/".join([parts[5], *tail[0::2]])
        raise resource_not_found(resource_type, "/".join(tail[1::2]), parts[3])
    raise bad_request("InvalidScope", f"The scope '{scope}' is not valid for role assignments.")


def _role_guid(ctx: Context, role_definition: str) -> str:
    match = _ROLE_DEFINITION_ID.match(role_definition)
    if not match:
        raise bad_request(
            "InvalidRoleDefinitionId", f"The role definition ID '{role_definition}' is not valid."
        )
    subscription, guid = match.groups()
    if roles.find(ctx, guid) is None or (
        subscription and subscription.lower() != ctx.subscription_id
    ):
        raise bad_request(
            "RoleDefinitionDoesNotExist",
            f"The specified role definition with ID '{guid}' does not exist.",
        )
    return guid.lower()


def _principal_type(ctx: Context, principal_id: str, requested: str | None) -> str:
    """The principal's type, from the directory; a requested type must agree with it. Azure
    accepts a principal it cannot find yet when the type is given (replication delay)."""
    canonical = None
    if requested is not None:
        canonical = next((t for t in PRINCIPAL_TYPES if t.lower() == str(requested).lower()), None)
        if canonical is None:
            raise bad_request(
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized: 'Requested "
                f"value '{requested}' was not found.' (principalType is one of "
                f"{', '.join(PRINCIPAL_TYPES)}).",
            )
    principal = principals.get(ctx, principal_id)
    if principal is None:
        if canonical is not None:
            return canonical
        raise bad_request(
            "PrincipalNotFound",
            f"Principal {principal_id.replace('-', '')} does not exist in the directory "
            f"{ctx.settings.tenant_id}. Check that you have the correct principal ID. If you are "
            "creating this principal and then immediately assigning a role, this error might be "
            "related to a replication delay. In this case, set the role assignment principalType "
            "property to a value, such as ServicePrincipal, User, or Group.  See "
            "https://aka.ms/docs-principaltype",
        )
    actual = _DIRECTORY_TYPES.get(principal["type"].lower(), principal["type"])
    if canonical is not None and canonical != actual:
        raise bad_request(
            "UnmatchedPrincipalType",
            f"The PrincipalId '{principal_id}' has type '{actual}' , which is different from "
            f"specified PrincipalType '{canonical}'.",
        )
    return actual


def requested_properties(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    """Validate a PUT body; return the properties to store (without scope and audit fields)."""
    props = body.get("properties")
    props = props if isinstance(props, dict) else {}
    role_guid = _role_guid(ctx, str(props.get("roleDefinitionId") or ""))
    principal_id = str(props.get("principalId") or "")
    if not _GUID.match(principal_id):
        raise bad_request(
            "InvalidPrincipalId",
            f"The Principal ID '{principal_id}' is not valid. Principal ID must be a GUID.",
        )
    principal_id = principal_id.lower()
    condition = props.get("condition")
    return {
        "roleDefinitionId": role_definition_id(ctx.subscription_id, role_guid),
        "principalId": principal_id,
        "principalType": _principal_type(ctx, principal_id, props.get("principalType")),
        "condition": condition,
        "conditionVersion": props.get("conditionVersion") or ("2.0" if condition else None),
        "description": props.get("description"),
        "delegatedManagedIdentityResourceId": props.get("delegatedManagedIdentityResourceId"),
    }


def _same_grant(a: dict[str, Any], scope: str, principal_id: str, role_definition: str) -> bool:
    props = a["properties"]
    return (
        normalise_scope(props["scope"]).lower() == scope.lower()
        and props["principalId"].lower() == principal_id
        and props["roleDefinitionId"].rsplit("/", 1)[-1].lower()
        == role_definition.rsplit("/", 1)[-1].lower()
    )


# -- queries ----------------------------------------------------------------------------------


def _find(ctx: Context, scope: str, name: str) -> dict[str, Any] | None:
    record = ctx.store.get(ASSIGNMENT_KIND, name)
    if record and normalise_scope(record["properties"]["scope"]).lower() == scope.lower():
        return record
    return None


def _parse_filter(raw: str) -> tuple[bool, str | None]:
    """``(at_scope_only, principal_id)`` from a ``$filter``."""
    at_scope_only, principal_id = False, None
    for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE) if raw.strip() else []:
        clause = clause.strip()
        if _AT_SCOPE.match(clause):
            at_scope_only = True
            continue
        match = _PRINCIPAL_FILTER.match(clause)
        if not match:
            raise bad_request(
                "UnsupportedQuery",
                f"The filter '{raw}' is not supported. Supported filters are either 'atScope()' "
                "or 'principalId eq '{value}'' or 'assignedTo('{value}')'.",
            )
        principal_id = (match.group(1) or match.group(2) or "").lower()
    return at_scope_only, principal_id


def assignments_at(
    ctx: Context, scope: str, *, at_scope_only: bool = False, principal_id: str | None = None
) -> list[dict[str, Any]]:
    """Assignments that apply at ``scope`` (at it or above), and unless ``at_scope_only`` those
    below it too, as ARM's list operations return them."""
    selected = []
    for assignment in ctx.store.values(ASSIGNMENT_KIND):
        props = assignment["properties"]
        if principal_id and props["principalId"].lower() != principal_id:
            continue
        at_or_above = covers(props["scope"], scope)
        below = covers(scope, props["scope"])
        if at_or_above or (below and not at_scope_only):
            selected.append(assignment)
    return selected


# -- lifecycle --------------------------------------------------------------------------------


def grant(
    ctx: Context, scope: str, principal_id: str, role_name: str, *, name: str | None = None
) -> dict[str, Any]:
    """Assign a built-in role without the API's checks, for the emulator's own set-up and for
    services that grant roles as Azure does on their behalf. Idempotent: an equal grant is
    returned as it is."""
    role = roles.built_in_by_name(role_name)
    if role is None:
        raise ValueError(f"'{role_name}' is not an Azure built-in role")
    definition = role_definition_id(ctx.subscription_id, role["name"])
    principal_id = principal_id.lower()
    for existing in ctx.store.values(ASSIGNMENT_KIND):
        if _same_grant(existing, normalise_scope(scope), principal_id, definition):
            return existing
    principal = principals.get(ctx, principal_id)
    kind = principal["type"].lower() if principal else "serviceprincipal"
    name = (name or str(uuid.uuid4())).lower()
    properties = {
        "roleDefinitionId": definition,
        "principalId": principal_id,
        "principalType": _DIRECTORY_TYPES.get(kind, "ServicePrincipal"),
        "condition": None,
        "conditionVersion": None,
        "description": None,
        "delegatedManagedIdentityResourceId": None,
    }
    body = assignment_body(normalise_scope(scope), name, properties, None)
    return ctx.store.put(ASSIGNMENT_KIND, name, body)


def ensure_development_owner(ctx: Context) -> None:
    """The development service principal is Owner of the subscription, as a real assignment."""
    scope = f"/subscriptions/{ctx.subscription_id}"
    grant(ctx, scope, principals.DEV_SP_OBJECT_ID, "Owner", name=DEVELOPMENT_OWNER_ASSIGNMENT)


def drop_assignments_under(ctx: Context, resource_id: str) -> None:
    """Delete hook: assignments at a deleted resource (or below it) go with it, as in ARM."""
    scope = normalise_scope(resource_id)
    if not scope:
        return
    for key, assignment in ctx.store.items(ASSIGNMENT_KIND):
        if covers(scope, assignment["properties"]["scope"]):
            ctx.store.delete(ASSIGNMENT_KIND, key)


# -- routes -----------------------------------------------------------------------------------


def register(router: Router, ctx: Context) -> None:
    async def create_assignment(request: Request, scope: str, name: str) -> Response:
        require_api_version(request)
        scope, name = normalise_scope(scope), _checked_name(name)
        caller = request.state.caller
        scope = existing_scope(ctx, scope)
        wanted = requested_properties(ctx, await json_body(request))
        with ctx.store.transaction():
            existing = ctx.store.get(ASSIGNMENT_KIND, name)
            if existing is not None:
                body = _updated(existing, scope, wanted, caller.object_id)
            else:
                _refuse_duplicate(ctx, scope, wanted)
                body = assignment_body(scope, name, wanted, caller.object_id)
            ctx.store.put(ASSIGNMENT_KIND, name, body)
        # Azure answers 201 to every successful PUT here; 2020-04-01-preview clients accept no other.
        return json_response(body, 201)

    async def get_assignment(request: Request, scope: str, name: str) -> Response:
        require_api_version(request)
        scope, name = normalise_scope(scope), _checked_name(name)
        scope = existing_scope(ctx, scope)
        record = _find(ctx, scope, name)
        if record is None:
            raise not_found("RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
        return json_response(record)

    async def delete_assignment(request: Request, scope: str, name: str) -> Response:
        require_api_version(request)
        scope, name = normalise_scope(scope), _checked_name(name)
        scope = existing_scope(ctx, scope)
        record = _find(ctx, scope, name)
        if record is None:
            return empty(204)
        ctx.store.delete(ASSIGNMENT_KIND, name)
        return json_response(record)

    async def list_assignments(request: Request, scope: str) -> Response:
        require_api_version(request)
        scope = normalise_scope(scope)
        scope = existing_scope(ctx, scope)
        at_scope_only, principal_id = _parse_filter(request.query_params.get("$filter", ""))
        items = assignments_at(ctx, scope, at_scope_only=at_scope_only, principal_id=principal_id)
        return json_response(list_page(items))

    prefix = "{scope:path}/providers/Microsoft.Authorization/roleAssignments"
    router.add("GET", prefix, list_assignments, action=READ, scope=_listed_scope)
    router.add("PUT", prefix + "/{name}", create_assignment, action=WRITE, scope=_assignment_scope)
    router.add("GET", prefix + "/{name}", get_assignment, action=READ, scope=_assignment_scope)
    router.add(
        "DELETE", prefix + "/{name}", delete_assignment, action=DELETE, scope=_assignment_scope
    )


def _assignment_scope(scope: str, name: str, **_: str) -> str:
    return assignment_id(normalise_scope(scope), name)


def _listed_scope(scope: str, **_: str) -> str:
    return normalise_scope(scope) or "/"


def _updated(
    existing: dict[str, Any], scope: str, wanted: dict[str, Any], caller_id: str
) -> dict[str, Any]:
    """A PUT on an existing name may change only its description and condition."""
    if not _same_grant(existing, scope, wanted["principalId"], wanted["roleDefinitionId"]):
        raise bad_request(
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        )
    props = existing["properties"]
    mutable = ("description", "condition", "conditionVersion")
    if all(props.get(key) == wanted[key] for key in mutable):
        return existing
    changes = {key: wanted[key] for key in mutable}
    return {
        **existing,
        "properties": {**props, **changes, "updatedOn": now_iso(), "updatedBy": caller_id},
    }


def _refuse_duplicate(ctx: Context, scope: str, wanted: dict[str, Any]) -> None:
    for other in ctx.store.values(ASSIGNMENT_KIND):
        if _same_grant(other, scope, wanted["principalId"], wanted["roleDefinitionId"]):
            raise conflict(
                "RoleAssignmentExists",
                "The role assignment already exists. The ID of the existing role assignment is "
                f"{other['name'].replace('-', '')}.",
            )
