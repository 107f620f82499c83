"""Helpers every resource provider uses: ids, existence checks, the common resource shape."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request, not_found, resource_group_not_found


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def subscription_id_or_404(ctx: Context, subscription: str) -> str:
    if subscription.lower() != ctx.subscription_id.lower():
        raise not_found(
            "SubscriptionNotFound", f"The subscription '{subscription}' could not be found."
        )
    return ctx.subscription_id


def rg_id(ctx: Context, resource_group: str) -> str:
    return f"/subscriptions/{ctx.subscription_id}/resourceGroups/{resource_group}"


def resource_group_or_404(ctx: Context, subscription: str, resource_group: str) -> dict[str, Any]:
    subscription_id_or_404(ctx, subscription)
    group = ctx.store.get_resource(rg_id(ctx, resource_group))
    if group is None:
        raise resource_group_not_found(resource_group)
    return group


def provider_id(ctx: Context, resource_group: str, namespace: str, *type_name_pairs: str) -> str:
    group = ctx.store.get_resource(rg_id(ctx, resource_group))
    rg_name = group["name"] if group else resource_group
    tail = "/".join(type_name_pairs)
    return f"/subscriptions/{ctx.subscription_id}/resourceGroups/{rg_name}/providers/{namespace}/{tail}"


def resource_or_404(ctx: Context, resource_id: str, type_name: str, name: str, rg: str) -> dict:
    body = ctx.store.get_resource(resource_id)
    if body is None:
        raise not_found(
            "ResourceNotFound",
            f"The Resource '{type_name}/{name}' under resource group '{rg}' was not found. "
            "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )
    return body


def system_data(existing: dict[str, Any] | None, caller: Any) -> dict[str, Any]:
    stamp = now_iso()
    created = (existing or {}).get("systemData") or {
        "createdBy": str(caller),
        "createdByType": "Application",
        "createdAt": stamp,
    }
    return {
        **created,
        "lastModifiedBy": str(caller),
        "lastModifiedByType": "Application",
        "lastModifiedAt": stamp,
    }


def delete_tree(ctx: Context, resource_id: str) -> None:
    """Delete a resource with everything below it, letting services drop their records."""
    with ctx.store.transaction():
        for hook in ctx.delete_hooks:
            hook(ctx, resource_id)
        ctx.store.delete_resource(resource_id)


def invalid_name(code: str, message: str) -> AzureError:
    return bad_request(code, message)


# -- parents, as routes declare them (see ``core.router``) ---------------------------------------


def in_subscription(ctx: Context) -> Callable[..., dict[str, Any]]:
    """The parent resolver of a route under ``/subscriptions/{sub}``: 404 for another one."""

    def resolve(sub: str, **_: str) -> dict[str, Any]:
        subscription_id_or_404(ctx, sub)
        return {"id": f"/subscriptions/{ctx.subscription_id}"}

    return resolve


def in_resource_group(ctx: Context) -> Callable[..., dict[str, Any]]:
    """The parent resolver of a route under ``.../resourceGroups/{rg}``: the group, or its 404."""

    def resolve(sub: str, rg: str, **_: str) -> dict[str, Any]:
        return resource_group_or_404(ctx, sub, rg)

    return resolve
