"""ARM core: subscriptions, locations, resource groups, generic resource lists, providers and
``POST /batch`` (the azure_rm inventory plugin sends its GETs through it)."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm import catalog
from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    delete_tree,
    in_resource_group,
    in_subscription,
    rg_id,
)
from localazure.authorization.access import is_allowed
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router

_RG_NAME = re.compile(r"^[-\w\._\(\)]{1,90}$")
SUBSCRIPTION_READ = "Microsoft.Resources/subscriptions/read"
LOCATIONS_READ = "Microsoft.Resources/subscriptions/locations/read"
GROUP_READ = "Microsoft.Resources/subscriptions/resourceGroups/read"
GROUP_WRITE = "Microsoft.Resources/subscriptions/resourceGroups/write"
GROUP_DELETE = "Microsoft.Resources/subscriptions/resourceGroups/delete"
GROUP_RESOURCES_READ = "Microsoft.Resources/subscriptions/resourceGroups/resources/read"
RESOURCES_READ = "Microsoft.Resources/subscriptions/resources/read"
PROVIDERS_READ = "Microsoft.Resources/subscriptions/providers/read"


@operations.on_complete("resourcegroup.delete")
def _delete_group(ctx: Context, params: dict[str, Any]) -> None:
    delete_tree(ctx, params["id"])


def subscription_body(ctx: Context) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{ctx.subscription_id}",
        "authorizationSource": "RoleBased",
        "subscriptionId": ctx.subscription_id,
        "tenantId": ctx.settings.tenant_id,
        "displayName": "localazure",
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    }


def register(router: Router, ctx: Context, dispatch) -> None:
    async def list_subscriptions(request: Request) -> Response:
        return json_response(list_page([subscription_body(ctx)]))

    async def get_subscription(request: Request, sub: str) -> Response:
        return json_response(subscription_body(ctx))

    async def list_locations(request: Request, sub: str) -> Response:
        return json_response(
            list_page(
                [
                    {
                        "id": f"/subscriptions/{ctx.subscription_id}/locations/{name}",
                        "name": name,
                        "displayName": display,
                        "regionalDisplayName": f"({geography}) {display}",
                        "metadata": {"regionType": "Physical", "geographyGroup": geography},
                    }
                    for name, (display, geography) in catalog.REGIONS.items()
                ]
            )
        )

    async def put_group(request: Request, sub: str, rg: str) -> Response:
        require_api_version(request)
        if not _RG_NAME.match(rg) or rg.endswith("."):
            raise bad_request(
                "InvalidResourceGroup",
                f"The provided resource group name '{rg}' has these invalid characters: "
                "resource group names may contain only alphanumerics, underscores, parentheses, "
                "hyphens and periods (not at the end), up to 90 characters.",
            )
        body = await json_body(request)
        existing = ctx.store.get_resource(rg_id(ctx, rg))
        if (
            existing
            and body.get("location")
            and (existing["location"] != body["location"].replace(" ", "").lower())
        ):
            raise AzureError(
                409,
                "InvalidResourceGroupLocation",
                f"Invalid resource group location '{body['location']}'. The Resource group "
                f"already exists in location '{existing['location']}'.",
            )
        location = existing["location"] if existing else None
        if not existing:
            location = check_location(body.get("location"), "Microsoft.Resources/resourceGroups")
        group = {
            "id": rg_id(ctx, existing["name"] if existing else rg),
            "name": existing["name"] if existing else rg,
            "type": "Microsoft.Resources/resourceGroups",
            "location": location,
            "tags": body.get("tags", existing.get("tags") if existing else None) or {},
            "properties": {"provisioningState": "Succeeded"},
        }
        if body.get("managedBy"):
            group["managedBy"] = body["managedBy"]
        ctx.store.put_resource(group, parent=f"/subscriptions/{ctx.subscription_id}")
        return json_response(group, 200 if existing else 201)

    async def get_group(request: Request, sub: str, rg: str) -> Response:
        group = request.state.parent
        if request.method == "HEAD":
            return empty(204)
        return json_response(group)

    async def patch_group(request: Request, sub: str, rg: str) -> Response:
        group = request.state.parent
        body = await json_body(request)
        if "tags" in body:
            group["tags"] = body["tags"] or {}
        ctx.store.put_resource(group, parent=f"/subscriptions/{ctx.subscription_id}")
        return json_response(group)

    async def delete_group(request: Request, sub: str, rg: str) -> Response:
        api_version = require_api_version(request)
        group = ctx.store.get_resource(rg_id(ctx, rg))
        if group is None:
            return empty(204)
        return operations.accepted(
            ctx,
            api_version,
            namespace="Microsoft.Resources",
            location=group["location"],
            kind="resourcegroup.delete",
            params={"id": group["id"]},
            duration=0.5,
        )

    async def list_groups(request: Request, sub: str) -> Response:
        # As in Azure, the list holds the groups the caller may read, not a 403.
        caller = request.state.caller
        groups = [
            group
            for group in ctx.store.list_resources(type="Microsoft.Resources/resourceGroups")
            if is_allowed(ctx, caller.object_id, GROUP_READ, group["id"])
        ]
        return json_response(list_page(groups))

    async def list_group_resources(request: Request, sub: str, rg: str) -> Response:
        group = request.state.parent
        items = [r for r in ctx.store.list_resources(parent=group["id"])]
        return json_response(list_page(_filtered(items, request)))

    async def list_subscription_resources(request: Request, sub: str) -> Response:
        items = [
            r
            for r in ctx.store.list_resources(under=f"/subscriptions/{ctx.subscription_id}")
            if r["type"].count("/") == 1 and r["type"] != "Microsoft.Resources/resourceGroups"
        ]
        return json_response(list_page(_filtered(items, request)))

    async def list_providers(request: Request, sub: str) -> Response:
        namespaces = sorted(catalog.published_namespaces().values(), key=str.lower)
        items = [catalog.provider_body(ctx.subscription_id, ns) for ns in namespaces]
        return json_response(list_page(items))

    async def get_provider(request: Request, sub: str, ns: str) -> Response:
        published = catalog.published_namespaces().get(ns.lower())
        if published is None:
            raise catalog.invalid_namespace(ns)
        return json_response(catalog.provider_body(ctx.subscription_id, published))

    async def register_provider(request: Request, sub: str, ns: str) -> Response:
        published = catalog.published_namespaces().get(ns.lower())
        if published is None:
            raise catalog.invalid_namespace(ns)
        if not catalog.implemented(published):
            # Azure would register it; localazure cannot serve it, so it stays NotRegistered.
            raise AzureError(
                409,
                "NamespaceNotEmulated",
                f"localazure does not emulate the resource provider '{published}'; it stays "
                "NotRegistered and its requests answer MissingSubscriptionRegistration.",
            )
        return json_response(catalog.provider_body(ctx.subscription_id, published))

    async def batch(request: Request) -> Response:
        body = await json_body(request)
        responses = []
        for item in body.get("requests", []):
            status, headers, content = await dispatch(
                request, item.get("httpMethod", "GET").upper(), item["url"], item.get("content")
            )
            responses.append(
                {
                    "name": item.get("name"),
                    "httpStatusCode": status,
                    "headers": headers,
                    "content": content,
                    "contentLength": len(json.dumps(content)) if content is not None else 0,
                }
            )
        return json_response({"responses": responses})

    in_sub = in_subscription(ctx)
    in_group = in_resource_group(ctx)
    sub_path = "/subscriptions/{sub}"
    group_path = sub_path + "/resourcegroups/{rg}"
    group_scope = "{parent}/resourceGroups/{rg}"
    # The list of subscriptions holds the caller's; the batch checks each request it carries.
    router.add("GET", "/subscriptions", list_subscriptions)
    router.add("GET", sub_path, get_subscription, parent=in_sub, action=SUBSCRIPTION_READ)
    router.add("GET", sub_path + "/locations", list_locations, parent=in_sub, action=LOCATIONS_READ)
    router.add("GET", sub_path + "/resourcegroups", list_groups, parent=in_sub)
    router.add("PUT", group_path, put_group, parent=in_sub, action=GROUP_WRITE, scope=group_scope)
    router.add("GET,HEAD", group_path, get_group, parent=in_group, action=GROUP_READ)
    router.add("PATCH", group_path, patch_group, parent=in_group, action=GROUP_WRITE)
    router.add(
        "DELETE", group_path, delete_group, parent=in_sub, action=GROUP_DELETE, scope=group_scope
    )
    router.add(
        "GET",
        group_path + "/resources",
        list_group_resources,
        parent=in_group,
        action=GROUP_RESOURCES_READ,
    )
    router.add(
        "GET",
        sub_path + "/resources",
        list_subscription_resources,
        parent=in_sub,
        action=RESOURCES_READ,
    )
    router.add("GET", sub_path + "/providers", list_providers, parent=in_sub, action=PROVIDERS_READ)
    router.add(
        "GET", sub_path + "/providers/{ns}", get_provider, parent=in_sub, action=PROVIDERS_READ
    )
    router.add(
        "POST",
        sub_path + "/providers/{ns}/register",
        register_provider,
        parent=in_sub,
        action="{ns}/register/action",
    )
    router.add("POST", "/batch", batch)


def _filtered(items: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
    """Apply the ``$filter=resourceType eq '...'`` form the SDKs and the inventory send."""
    flt = request.query_params.get("$filter", "")
    m = re.search(r"resourceType eq '([^']+)'", flt, re.IGNORECASE)
    if m:
        wanted = m.group(1).lower()
        items = [i for i in items if i["type"].lower() == wanted]
    return items
