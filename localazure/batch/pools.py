"""Pools through the management API (``.../batchAccounts/{account}/pools/{pool}``): create
(PUT), update (PATCH), read, list, delete (long-running), ``stopResize`` and
``disableAutoScale``, as azure-mgmt-batch and ``azure_rm_batchaccountpool`` send them.

The VM size and the deployment configuration are fixed once a pool exists (Batch's rule); a
change of scale settings starts a resize.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.authorization.access import covers
from localazure.batch import (
    NAMESPACE,
    POOL_TYPE,
    accounts,
    nodes,
    pool_model,
    pool_views,
    resource_files,
)
from localazure.batch.pool_model import invalid
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, not_found
from localazure.core.http import json_body, json_response, list_page, require_api_version
from localazure.core.router import Router

WRITE = f"{POOL_TYPE}/write"
READ = f"{POOL_TYPE}/read"
DELETE = f"{POOL_TYPE}/delete"
IMMUTABLE = ("vmSize", "deploymentConfiguration")
MUTABLE = (
    "scaleSettings",
    "startTask",
    "metadata",
    "applicationPackages",
    "certificates",
    "taskSchedulingPolicy",
)


def pool_not_found(name: str) -> AzureError:
    return not_found("PoolNotFound", f"The specified pool '{name}' does not exist.")


def _identity(ctx: Context, requested: dict[str, Any] | None) -> dict[str, Any] | None:
    if not requested or requested.get("type") in (None, "None"):
        return None
    if requested.get("type") != "UserAssigned":
        raise invalid("A pool's identity type must be UserAssigned or None.", "identity.type")
    return {
        "type": "UserAssigned",
        "userAssignedIdentities": accounts.user_identities(ctx, requested),
    }


def _identity_ids(identity: dict[str, Any] | None) -> set[str]:
    return {i.lower() for i in ((identity or {}).get("userAssignedIdentities") or {})}


def drop_under(ctx: Context, resource_id: str) -> None:
    for key, _ in ctx.store.items(pool_model.RESIZE_KIND):
        if covers(resource_id, key):
            ctx.store.delete(pool_model.RESIZE_KIND, key)
            ctx.store.delete("batch-autoscale-run", key)


def register(router: Router, ctx: Context) -> None:
    def load(request: Request, name: str) -> tuple[dict, dict]:
        account = request.state.parent
        pool = ctx.store.get_resource(f"{account['id']}/pools/{name}")
        if pool is None:
            raise pool_not_found(name)
        return account, pool

    async def put_pool(request: Request, sub: str, rg: str, account: str, name: str) -> Response:
        require_api_version(request)
        acct = request.state.parent
        pool_model.check_pool_name(name)
        body = await json_body(request)
        props = copy.deepcopy(body.get("properties") or {})
        identity = _identity(ctx, body.get("identity"))
        pool_model.validate(props, _identity_ids(identity))
        resource_files.validate(props.get("startTask"))
        rid = f"{acct['id']}/pools/{name}"
        now = ctx.clock()
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            if request.headers.get("if-none-match") == "*" and existing:
                raise AzureError(409, "PoolExists", f"The pool '{name}' already exists.")
            if existing:
                for field in IMMUTABLE:
                    if props.get(field) != existing["properties"].get(field):
                        raise AzureError(
                            409,
                            "PropertyCannotBeUpdated",
                            f"The property '{field}' of an existing pool cannot be changed; "
                            "delete the pool and create it again.",
                        )
            else:
                limits = accounts.quota(ctx, acct)
                count = len(ctx.store.list_resources(type=POOL_TYPE, parent=acct["id"]))
                if count >= limits.pools:
                    raise AzureError(
                        409, "PoolQuotaReached", "The account has reached its quota of pools."
                    )
            pool = {
                "id": rid,
                "name": name,
                "type": POOL_TYPE,
                "location": acct["location"],
                "identity": identity,
                "properties": props,
                "creation_ts": existing["creation_ts"] if existing else now,
                "modified_ts": now,
            }
            ctx.store.put_resource(pool)
            old_scale = (existing or {}).get("properties", {}).get("scaleSettings")
            if existing is None or old_scale != props.get("scaleSettings"):
                pool_model.resize_from_scale(ctx, pool, now)
        return json_response(
            pool_views.mgmt_view(ctx, pool), headers={"ETag": pool_views.pool_etag(pool)}
        )

    async def patch_pool(request: Request, sub: str, rg: str, account: str, name: str) -> Response:
        require_api_version(request)
        acct, pool = load(request, name)
        body = await json_body(request)
        props = body.get("properties") or {}
        for field in IMMUTABLE:
            if field in props and props[field] != pool["properties"].get(field):
                raise AzureError(
                    409,
                    "PropertyCannotBeUpdated",
                    f"The property '{field}' of an existing pool cannot be changed.",
                )
        merged = copy.deepcopy(pool["properties"])
        merged.update({k: v for k, v in props.items() if k in MUTABLE})
        identity = (
            _identity(ctx, body["identity"]) if body.get("identity") else pool.get("identity")
        )
        pool_model.validate(merged, _identity_ids(identity))
        resource_files.validate(merged.get("startTask"))
        now = ctx.clock()
        with ctx.store.transaction():
            scale_changed = merged.get("scaleSettings") != pool["properties"].get("scaleSettings")
            pool.update(properties=merged, identity=identity, modified_ts=now)
            ctx.store.put_resource(pool)
            if scale_changed:
                pool_model.resize_from_scale(ctx, pool, now)
        return json_response(
            pool_views.mgmt_view(ctx, pool), headers={"ETag": pool_views.pool_etag(pool)}
        )

    async def get_pool(request: Request, sub: str, rg: str, account: str, name: str) -> Response:
        require_api_version(request)
        _, pool = load(request, name)
        return json_response(
            pool_views.mgmt_view(ctx, pool), headers={"ETag": pool_views.pool_etag(pool)}
        )

    async def list_pools(request: Request, sub: str, rg: str, account: str) -> Response:
        require_api_version(request)
        acct = request.state.parent
        items = ctx.store.list_resources(type=POOL_TYPE, parent=acct["id"])
        return json_response(list_page([pool_views.mgmt_view(ctx, p) for p in items]))

    async def delete_pool(request: Request, sub: str, rg: str, account: str, name: str) -> Response:
        version = require_api_version(request)
        acct, pool = load(request, name)
        return operations.accepted(
            ctx,
            version,
            namespace=NAMESPACE,
            location=acct["location"],
            kind="batch-delete",
            params={"id": pool["id"]},
        )

    async def stop_resize(request: Request, sub: str, rg: str, account: str, name: str) -> Response:
        require_api_version(request)
        _, pool = load(request, name)
        stop_pool_resize(ctx, pool)
        return json_response(pool_views.mgmt_view(ctx, pool))

    async def disable_auto_scale(
        request: Request, sub: str, rg: str, account: str, name: str
    ) -> Response:
        require_api_version(request)
        _, pool = load(request, name)
        scale = pool["properties"].get("scaleSettings") or {}
        if scale.get("autoScale"):
            dedicated, low = nodes.counts(ctx, pool["id"])
            pool["properties"]["scaleSettings"] = {
                "fixedScale": {"targetDedicatedNodes": dedicated, "targetLowPriorityNodes": low}
            }
            pool["modified_ts"] = ctx.clock()
            ctx.store.put_resource(pool)
        return json_response(pool_views.mgmt_view(ctx, pool))

    prefix = (
        f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/{NAMESPACE}/batchAccounts/"
        "{account}/pools"
    )

    def in_account(sub: str, rg: str, account: str, **_: str) -> dict[str, Any]:
        return accounts.load(ctx, sub, rg, account)

    one, scope = prefix + "/{name}", "{parent}/pools/{name}"
    for method, path, handler, action in (
        ("PUT", one, put_pool, WRITE),
        ("PATCH", one, patch_pool, WRITE),
        ("GET", one, get_pool, READ),
        ("DELETE", one, delete_pool, DELETE),
        ("POST", one + "/stopResize", stop_resize, WRITE),
        ("POST", one + "/disableAutoScale", disable_auto_scale, WRITE),
    ):
        router.add(method, path, handler, parent=in_account, action=action, scope=scope)
    router.add("GET", prefix, list_pools, parent=in_account, action=READ)


def stop_pool_resize(ctx: Context, pool: dict[str, Any]) -> None:
    """The resize stops where it is: the targets become the nodes allocated so far."""
    operation = pool_model.resize(ctx, pool["id"])
    if operation and operation["state"] == "resizing":
        dedicated, low = nodes.counts(ctx, pool["id"])
        now = ctx.clock()
        operation.update(
            targetDedicatedNodes=dedicated,
            targetLowPriorityNodes=low,
            state="steady",
            transitionTime=now,
        )
        operation["errors"].append(
            {
                "code": "ResizeStopped",
                "message": "The user stopped the resize operation.",
                "values": [],
            }
        )
        pool_model.save_resize(ctx, pool["id"], operation)
    return None
