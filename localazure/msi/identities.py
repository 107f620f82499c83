"""User-assigned managed identities
(``.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}``).

Creating one creates its service principal in the directory (``principalId``, ``clientId``);
deleting it, or the resource group holding it, deletes that principal. Role assignments naming a
deleted principal stay, as in Azure, where they show as "Identity not found"."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    delete_tree,
    in_resource_group,
    in_subscription,
    provider_id,
    resource_or_404,
    system_data,
)
from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.identity import principals

NAMESPACE = "Microsoft.ManagedIdentity"
IDENTITY_TYPE = f"{NAMESPACE}/userAssignedIdentities"
READ = f"{IDENTITY_TYPE}/read"
WRITE = f"{IDENTITY_TYPE}/write"
DELETE = f"{IDENTITY_TYPE}/delete"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$")
ISOLATION_SCOPES = ("None", "Regional")


def identity_id(ctx: Context, resource_group: str, name: str) -> str:
    return provider_id(ctx, resource_group, NAMESPACE, "userAssignedIdentities", name)


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise bad_request(
            "InvalidResourceName",
            f"Resource name '{name}' is invalid. The name must be 3 to 128 characters long, start "
            "with a letter or number, and contain only letters, numbers, hyphens and underscores.",
        )


def _isolation_scope(body: dict[str, Any], current: str) -> str:
    """``properties.isolationScope`` of a PUT or PATCH body (api-version 2024-11-30 and later),
    ``current`` when the body does not set it."""
    props = body.get("properties")
    requested = props.get("isolationScope") if isinstance(props, dict) else None
    if requested is None:
        return current
    scope = next((s for s in ISOLATION_SCOPES if s.lower() == str(requested).lower()), None)
    if scope is None:
        raise bad_request(
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: 'Requested value "
            f"'{requested}' was not found.' (isolationScope is one of "
            f"{', '.join(ISOLATION_SCOPES)}).",
        )
    return scope


def drop_principals_under(ctx: Context, resource_id: str) -> None:
    """Delete hook: a deleted identity (or resource group) takes its principals with it."""
    target = resource_id.rstrip("/").lower()
    for identity in ctx.store.list_resources(type=IDENTITY_TYPE):
        key = identity["id"].lower()
        if key == target or key.startswith(target + "/"):
            principals.delete(ctx, identity["properties"]["principalId"])


def register(router: Router, ctx: Context) -> None:
    def load(rg: str, name: str) -> dict[str, Any]:
        return resource_or_404(ctx, identity_id(ctx, rg, name), IDENTITY_TYPE, name, rg)

    async def put_identity(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        caller = request.state.caller
        group = request.state.parent
        _check_name(name)
        body = await json_body(request)
        rid = identity_id(ctx, group["name"], name)
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            if existing is None:
                location = check_location(body.get("location"), IDENTITY_TYPE)
                principal = principals.create_managed_identity(ctx, name, rid)
                properties = {
                    "tenantId": ctx.settings.tenant_id,
                    "principalId": principal["objectId"],
                    "clientId": principal["appId"],
                    "isolationScope": _isolation_scope(body, "None"),
                }
            else:
                location = existing["location"]
                requested = check_location(body.get("location") or location, IDENTITY_TYPE)
                if requested != location:
                    raise bad_request(
                        "InvalidResourceLocation",
                        f"The resource '{existing['name']}' already exists in location "
                        f"'{location}' in resource group '{group['name']}'. A resource with the "
                        f"same name cannot be created in location '{requested}'. Please select "
                        "a new resource name.",
                    )
                properties = {
                    **existing["properties"],
                    "isolationScope": _isolation_scope(
                        body, existing["properties"].get("isolationScope", "None")
                    ),
                }
            identity = {
                "id": existing["id"] if existing else rid,
                "name": existing["name"] if existing else name,
                "type": IDENTITY_TYPE,
                "location": location,
                "tags": body.get("tags") or {},
                "properties": properties,
                "systemData": system_data(existing, caller),
            }
            ctx.store.put_resource(identity)
        return json_response(identity, 200 if existing else 201)

    async def get_identity(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        return json_response(load(rg, name))

    async def patch_identity(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        caller = request.state.caller
        identity = load(rg, name)
        body = await json_body(request)
        if "tags" in body:
            identity["tags"] = body["tags"] or {}
        props = identity["properties"]
        props["isolationScope"] = _isolation_scope(body, props.get("isolationScope", "None"))
        identity["systemData"] = system_data(identity, caller)
        ctx.store.put_resource(identity)
        return json_response(identity)

    async def delete_identity(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        existing = ctx.store.get_resource(identity_id(ctx, rg, name))
        if existing is None:
            return empty(204)
        delete_tree(ctx, existing["id"])
        return empty(200)

    async def list_in_group(request: Request, sub: str, rg: str) -> Response:
        require_api_version(request)
        group = request.state.parent
        items = ctx.store.list_resources(type=IDENTITY_TYPE, parent=group["id"])
        return json_response(list_page(items))

    async def list_in_subscription(request: Request, sub: str) -> Response:
        require_api_version(request)
        return json_response(list_page(ctx.store.list_resources(type=IDENTITY_TYPE)))

    rg_prefix = f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/{IDENTITY_TYPE}"
    in_group, in_sub = in_resource_group(ctx), in_subscription(ctx)
    one = rg_prefix + "/{name}"
    scope = "{parent}/providers/" + IDENTITY_TYPE + "/{name}"
    router.add("PUT", one, put_identity, parent=in_group, action=WRITE, scope=scope)
    router.add("GET", one, get_identity, parent=in_group, action=READ, scope=scope)
    router.add("PATCH", one, patch_identity, parent=in_group, action=WRITE, scope=scope)
    router.add("DELETE", one, delete_identity, parent=in_group, action=DELETE, scope=scope)
    router.add("GET", rg_prefix, list_in_group, parent=in_group, action=READ)
    router.add(
        "GET",
        f"/subscriptions/{{sub}}/providers/{IDENTITY_TYPE}",
        list_in_subscription,
        parent=in_sub,
        action=READ,
    )
