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
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    delete_tree,
    now_iso,
    provider_id,
    resource_group_or_404,
    resource_or_404,
    subscription_id_or_404,
    system_data,
)
from localazure.authorization.access import covers, require
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
)


def workspace_id(ctx: Context, resource_group: str, name: str) -> str:
    return provider_id(ctx, resource_group, NAMESPACE, "workspaces", name)


def load(ctx: Context, sub: str, rg: str, name: str) -> dict[str, Any]:
    """The workspace, or ARM's 404 (for the resource group first, as ARM answers)."""
    resource_group_or_404(ctx, sub, rg)
    return resource_or_404(ctx, workspace_id(ctx, rg, name), WORKSPACE_TYPE, name, rg)


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
    return workspace["identity"]["principalId"]


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise bad_request(
            "InvalidResourceName",
            f"Resource name '{name}' is invalid. A workspace name must be 3 to 33 characters "
            "long, start with a letter or digit, and contain only letters, digits, hyphens and "
            "underscores.",
        )


def _check_identity(identity: dict[str, Any] | None) -> None:
    kind = (identity or {}).get("type", "SystemAssigned")
    if str(kind).replace(" ", "").lower() != "systemassigned":
        raise bad_request(
            "InvalidIdentityType",
            f"Identity type '{kind}' is not supported by localazure for workspaces; use "
            "'SystemAssigned' (the workspace identity that pulls images and runs jobs).",
        )


def _new_workspace(
    ctx: Context, rid: str, name: str, location: str, principal: dict[str, Any]
) -> dict[str, Any]:
    host = ctx.endpoint.removeprefix("https://")
    return {
        "id": rid,
        "name": name,
        "type": WORKSPACE_TYPE,
        "location": location,
        "kind": "Default",
        "sku": {"name": "Basic", "tier": "Basic"},
        "identity": {
            "type": "SystemAssigned",
            "principalId": principal["objectId"],
            "tenantId": ctx.settings.tenant_id,
        },
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
        },
    }


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
            principals.delete(ctx, principal_of(workspace))


def register(router: Router, ctx: Context) -> None:
    async def put_workspace(request: Request, sub: str, rg: str, workspace: str) -> Response:
        api_version = require_api_version(request)
        caller = request.state.caller
        require(ctx, caller, WRITE, workspace_id(ctx, rg, workspace))
        group = resource_group_or_404(ctx, sub, rg)
        _check_name(workspace)
        body = await json_body(request)
        _check_identity(body.get("identity"))
        rid = workspace_id(ctx, group["name"], workspace)
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            if existing is None:
                location = check_location(body.get("location"), WORKSPACE_TYPE)
                principal = principals.create_managed_identity(ctx, workspace, rid)
                resource = _new_workspace(ctx, rid, workspace, location, principal)
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
        return json_response(
            resource,
            200 if existing else 201,
            headers=operations.headers(ctx, op, api_version),
        )

    async def get_workspace(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        require(ctx, request.state.caller, READ, workspace_id(ctx, rg, workspace))
        return json_response(load(ctx, sub, rg, workspace))

    async def patch_workspace(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        caller = request.state.caller
        require(ctx, caller, WRITE, workspace_id(ctx, rg, workspace))
        resource = load(ctx, sub, rg, workspace)
        body = await json_body(request)
        if "tags" in body:
            resource["tags"] = body["tags"] or {}
        given = body.get("properties") or {}
        resource["properties"].update({k: given[k] for k in _SETTABLE if k in given})
        resource["systemData"] = system_data(resource, caller)
        ctx.store.put_resource(resource)
        return json_response(resource)

    async def delete_workspace(request: Request, sub: str, rg: str, workspace: str) -> Response:
        api_version = require_api_version(request)
        require(ctx, request.state.caller, DELETE, workspace_id(ctx, rg, workspace))
        resource_group_or_404(ctx, sub, rg)
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
        group = resource_group_or_404(ctx, sub, rg)
        require(ctx, request.state.caller, READ, group["id"])
        items = ctx.store.list_resources(type=WORKSPACE_TYPE, parent=group["id"])
        return json_response(list_page(items))

    async def list_in_subscription(request: Request, sub: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, READ, f"/subscriptions/{ctx.subscription_id}")
        return json_response(list_page(ctx.store.list_resources(type=WORKSPACE_TYPE)))

    async def discovery(request: Request) -> Response:
        return json_response(discovery_document(ctx))

    path = RG_PREFIX + "/workspaces/{workspace}"
    router.add("PUT", path, put_workspace)
    router.add("GET", path, get_workspace)
    router.add("PATCH", path, patch_workspace)
    router.add("DELETE", path, delete_workspace)
    router.add("GET", RG_PREFIX + "/workspaces", list_in_group)
    router.add("GET", f"/subscriptions/{{sub}}/providers/{WORKSPACE_TYPE}", list_in_subscription)
    # The SDK fetches the discovery document without credentials, as it does from Azure.
    router.add("GET", "/discovery", discovery, auth="none")
