"""Azure ML workspaces (``.../providers/Microsoft.MachineLearningServices/workspaces/{name}``).

A workspace always has a system-assigned identity: creating one creates its managed-identity
principal (``identity.principalId``), deleting it (or its resource group) deletes the principal.
Its ``discoveryUrl`` points at the emulator, whose discovery document sends the run-history and
other data-plane clients back to the emulator.

Deviation: Azure requires the ids of a storage account, a key vault and Application Insights in
the PUT (``ml_client.workspaces.begin_create`` deploys them with an ARM template); the emulator
accepts a minimal body (``{"location": ..., "identity": {"type": "SystemAssigned"}}``) and keeps
whatever dependent-resource ids it is given without checking them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    delete_tree,
    in_resource_group,
    in_subscription,
    now_iso,
    provider_id,
    resource_group_or_404,
    resource_or_404,
    system_data,
)
from localazure.authorization.access import covers
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.identity import principals
from localazure.ml import NAMESPACE, RG_PREFIX, WORKSPACE_TYPE

READ = f"{WORKSPACE_TYPE}/read"
WRITE = f"{WORKSPACE_TYPE}/write"
DELETE = f"{WORKSPACE_TYPE}/delete"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$")
# Properties a caller may set; everything else is the service's.
_SETTABLE = (
    "friendlyName",
    "description",
    "storageAccount",
    "keyVault",
    "applicationInsights",
    "containerRegistry",
    "hbiWorkspace",
    "publicNetworkAccess",
    "imageBuildCompute",
    "primaryUserAssignedIdentity",
)
IDENTITY_TYPES = ("SystemAssigned", "UserAssigned", "SystemAssigned,UserAssigned")
USER_ASSIGNED_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"


def workspace_id(ctx: Context, resource_group: str, name: str) -> str:
    return provider_id(ctx, resource_group, NAMESPACE, "workspaces", name)


def load(ctx: Context, sub: str, rg: str, name: str) -> dict[str, Any]:
    """The workspace, or ARM's 404 (for the resource group first, as ARM answers)."""
    resource_group_or_404(ctx, sub, rg)
    return resource_or_404(ctx, workspace_id(ctx, rg, name), WORKSPACE_TYPE, name, rg)


def in_workspace(ctx: Context) -> Callable[..., dict[str, Any]]:
    """The parent resolver of routes under a workspace (see ``core.router``)."""

    def resolve(sub: str, rg: str, workspace: str, **_: str) -> dict[str, Any]:
        return load(ctx, sub, rg, workspace)

    return resolve


def discovery_url(ctx: Context) -> str:
    return f"{ctx.endpoint}/discovery"


def discovery_document(ctx: Context) -> dict[str, str]:
    """What ``GET {discoveryUrl}`` returns: the base URL of each data-plane service."""
    services = (
        "api",
        "catalog",
        "experimentation",
        "gallery",
        "history",
        "hyperdrive",
        "labeling",
        "modelmanagement",
        "pipelines",
    )
    return {**dict.fromkeys(services, ctx.endpoint), "studio": "https://ml.azure.com"}


def principal_of(workspace: dict[str, Any]) -> str:
    """The identity the workspace acts as (image pulls, jobs): its system-assigned identity, else
    its primary user-assigned identity (the first one when none is named primary)."""
    identity = workspace["identity"]
    if identity.get("principalId"):
        return identity["principalId"]
    assigned = identity.get("userAssignedIdentities") or {}
    primary = workspace["properties"].get("primaryUserAssignedIdentity")
    key = next((k for k in assigned if primary and k.lower() == primary.lower()), None)
    return assigned[key or next(iter(assigned))]["principalId"]


def system_principal_of(workspace: dict[str, Any]) -> str | None:
    return workspace["identity"].get("principalId")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise bad_request(
            "InvalidResourceName",
            f"Resource name '{name}' is invalid. A workspace name must be 3 to 33 characters "
            "long, start with a letter or digit, and contain only letters, digits, hyphens and "
            "underscores.",
        )


def _identity_type(identity: dict[str, Any] | None) -> str:
    kind = str((identity or {}).get("type", "SystemAssigned")).replace(" ", "")
    found = next((t for t in IDENTITY_TYPES if t.lower() == kind.lower()), None)
    if found is None:
        raise bad_request(
            "InvalidIdentityType",
            f"Identity type '{kind}' is not supported by localazure for workspaces; use one of "
            f"{', '.join(IDENTITY_TYPES)} (the workspace needs an identity to pull images and "
            "run jobs).",
        )
    return found


def _user_assigned(ctx: Context, identity: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """The requested user-assigned identities, each as Azure echoes it (principal and client id)."""
    requested = (identity or {}).get("userAssignedIdentities") or {}
    if "UserAssigned" in kind and not requested:
        raise bad_request(
            "InvalidIdentityType",
            f"Identity type '{kind}' needs at least one entry in 'userAssignedIdentities'.",
        )
    assigned = {}
    for rid in requested:
        found = ctx.store.get_resource(rid)
        if found is None or found["type"].lower() != USER_ASSIGNED_TYPE.lower():
            raise bad_request(
                "UserAssignedIdentityNotFound",
                f"The user-assigned identity '{rid}' was not found.",
            )
        props = found["properties"]
        assigned[found["id"]] = {"principalId": props["principalId"], "clientId": props["clientId"]}
    return assigned


def _identity(
    ctx: Context, requested: dict[str, Any] | None, system_principal: str | None
) -> dict[str, Any]:
    kind = _identity_type(requested)
    identity: dict[str, Any] = {"type": kind}
    if system_principal:
        identity["principalId"] = system_principal
        identity["tenantId"] = ctx.settings.tenant_id
    assigned = _user_assigned(ctx, requested, kind)
    if assigned:
        identity["userAssignedIdentities"] = assigned
    return identity


def _new_workspace(
    ctx: Context, rid: str, name: str, location: str, identity: dict[str, Any]
) -> dict[str, Any]:
    host = ctx.endpoint.removeprefix("https://")
    return {
        "id": rid,
        "name": name,
        "type": WORKSPACE_TYPE,
        "location": location,
        "kind": "Default",
        "sku": {"name": "Basic", "tier": "Basic"},
        "identity": identity,
        "properties": {
            "friendlyName": name,
            "description": "",
            "workspaceId": str(uuid.uuid4()),
            "discoveryUrl": discovery_url(ctx),
            "mlFlowTrackingUri": f"azureml://{host}/mlflow/v1.0{rid}",
            "hbiWorkspace": False,
            "publicNetworkAccess": "Enabled",
            "provisioningState": "Succeeded",
            "creationTime": now_iso(),
            "tenantId": ctx.settings.tenant_id,
            "storageHnsEnabled": False,
            "v1LegacyMode": False,
            "enableDataIsolation": False,
            "privateLinkCount": 0,
            # Keys Azure returns for a workspace without customer-managed keys, private
            # endpoints or a managed network.
            "encryption": None,
            "managedNetwork": {"isolationMode": "Disabled", "outboundRules": {}},
            "privateEndpointConnections": [],
            "sharedPrivateLinkResources": [],
            "notebookInfo": None,
            "serviceProvisionedResourceGroup": None,
            "primaryUserAssignedIdentity": None,
            "allowPublicAccessWhenBehindVnet": False,
            "workspaceHubConfig": None,
        },
    }


def _changed_identity(
    ctx: Context, workspace: dict[str, Any], requested: dict[str, Any]
) -> dict[str, Any]:
    """A PUT or PATCH may add user-assigned identities or change the type; the system-assigned
    identity is created when first asked for and kept while the type includes it."""
    kind = _identity_type(requested)
    system = system_principal_of(workspace)
    if kind.startswith("SystemAssigned") and not system:
        system = principals.create_managed_identity(ctx, workspace["name"], workspace["id"])[
            "objectId"
        ]
    elif not kind.startswith("SystemAssigned") and system:
        principals.delete(ctx, system)
        system = None
    return _identity(ctx, requested, system)


@operations.on_complete("ml.workspace.put")
def _workspace_put_done(ctx: Context, params: dict[str, Any]) -> None:
    return None


@operations.on_complete("ml.workspace.delete")
def _delete_workspace(ctx: Context, params: dict[str, Any]) -> None:
    delete_tree(ctx, params["id"])


def drop_principals_under(ctx: Context, resource_id: str) -> None:
    """Delete hook: a deleted workspace (or resource group) takes its identity with it."""
    for workspace in ctx.store.list_resources(type=WORKSPACE_TYPE):
        if covers(resource_id, workspace["id"]):
            system = system_principal_of(workspace)
            if system:
                principals.delete(ctx, system)


def register(router: Router, ctx: Context) -> None:
    async def put_workspace(request: Request, sub: str, rg: str, workspace: str) -> Response:
        api_version = require_api_version(request)
        caller = request.state.caller
        group = request.state.parent
        _check_name(workspace)
        body = await json_body(request)
        _identity_type(body.get("identity"))
        rid = workspace_id(ctx, group["name"], workspace)
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            if existing is None:
                location = check_location(body.get("location"), WORKSPACE_TYPE)
                system = None
                if _identity_type(body.get("identity")).startswith("SystemAssigned"):
                    system = principals.create_managed_identity(ctx, workspace, rid)["objectId"]
                identity = _identity(ctx, body.get("identity"), system)
                resource = _new_workspace(ctx, rid, workspace, location, identity)
            else:
                resource = existing
                requested = check_location(
                    body.get("location") or existing["location"], WORKSPACE_TYPE
                )
                if requested != existing["location"]:
                    raise bad_request(
                        "InvalidResourceLocation",
                        f"The resource '{existing['name']}' already exists in location "
                        f"'{existing['location']}' in resource group '{group['name']}'. A "
                        f"resource with the same name cannot be created in location "
                        f"'{requested}'. Please select a new resource name.",
                    )
            given = body.get("properties") or {}
            resource["properties"].update({k: given[k] for k in _SETTABLE if k in given})
            if existing is not None and body.get("identity"):
                resource["identity"] = _changed_identity(ctx, resource, body["identity"])
            resource["tags"] = body.get("tags") or {}
            resource["systemData"] = system_data(existing, caller)
            ctx.store.put_resource(resource)
        op = operations.start(
            ctx,
            namespace=NAMESPACE,
            location=resource["location"],
            kind="ml.workspace.put",
            params={"id": rid},
        )
        # Azure answers 200 (or 202) to a workspace PUT, with the operation to poll.
        return json_response(resource, 200, headers=operations.headers(ctx, op, api_version))

    async def get_workspace(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        return json_response(load(ctx, sub, rg, workspace))

    async def patch_workspace(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        caller = request.state.caller
        resource = load(ctx, sub, rg, workspace)
        body = await json_body(request)
        if "tags" in body:
            resource["tags"] = body["tags"] or {}
        given = body.get("properties") or {}
        resource["properties"].update({k: given[k] for k in _SETTABLE if k in given})
        if body.get("identity"):
            resource["identity"] = _changed_identity(ctx, resource, body["identity"])
        resource["systemData"] = system_data(resource, caller)
        ctx.store.put_resource(resource)
        return json_response(resource)

    async def delete_workspace(request: Request, sub: str, rg: str, workspace: str) -> Response:
        api_version = require_api_version(request)
        existing = ctx.store.get_resource(workspace_id(ctx, rg, workspace))
        if existing is None:
            return empty(204)
        return operations.accepted(
            ctx,
            api_version,
            namespace=NAMESPACE,
            location=existing["location"],
            kind="ml.workspace.delete",
            params={"id": existing["id"]},
        )

    async def list_in_group(request: Request, sub: str, rg: str) -> Response:
        require_api_version(request)
        group = request.state.parent
        items = ctx.store.list_resources(type=WORKSPACE_TYPE, parent=group["id"])
        return json_response(list_page(items))

    async def list_in_subscription(request: Request, sub: str) -> Response:
        require_api_version(request)
        return json_response(list_page(ctx.store.list_resources(type=WORKSPACE_TYPE)))

    async def discovery(request: Request) -> Response:
        return json_response(discovery_document(ctx))

    path = RG_PREFIX + "/workspaces/{workspace}"
    in_group, in_sub = in_resource_group(ctx), in_subscription(ctx)
    scope = "{parent}/providers/" + WORKSPACE_TYPE + "/{workspace}"
    router.add("PUT", path, put_workspace, parent=in_group, action=WRITE, scope=scope)
    router.add("GET", path, get_workspace, parent=in_group, action=READ, scope=scope)
    router.add("PATCH", path, patch_workspace, parent=in_group, action=WRITE, scope=scope)
    router.add("DELETE", path, delete_workspace, parent=in_group, action=DELETE, scope=scope)
    router.add("GET", RG_PREFIX + "/workspaces", list_in_group, parent=in_group, action=READ)
    router.add(
        "GET",
        f"/subscriptions/{{sub}}/providers/{WORKSPACE_TYPE}",
        list_in_subscription,
        parent=in_sub,
        action=READ,
    )
    # The SDK fetches the discovery document without credentials, as it does from Azure.
    router.add("GET", "/discovery", discovery, auth="none")
