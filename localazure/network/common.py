"""What every Microsoft.Network resource shares: its id, ``etag`` and ``provisioningState``,
answers to PUT with an ``Azure-AsyncOperation`` header (the SDK pollers follow it, then read the
resource), deletes answered 202 and completed through an operation, and the routes of a
top-level resource type with optional child collections."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from localazure.authorization.access import is_allowed
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request, not_found
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.network import NAMESPACE

DELETE_KIND = "network.delete"
# fn(ctx, resource) run inside the delete's transaction, by type (lower-cased).
_BEFORE_DELETE: dict[str, Callable[[Context, dict[str, Any]], None]] = {}


def network_id(ctx: Context, rg: str, collection: str, name: str, *child: str) -> str:
    return provider_id(ctx, rg, NAMESPACE, collection, name, *child)


def new_etag() -> str:
    return f'W/"{uuid.uuid4()}"'


def sub_resource(resource_id: str | None) -> dict[str, str] | None:
    return {"id": resource_id} if resource_id else None


def ref_id(value: Any) -> str | None:
    """The ``id`` of a sub-resource reference (``{"id": ...}``), if any."""
    return value.get("id") if isinstance(value, dict) and value.get("id") else None


def name_of(resource_id: str) -> str:
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def group_of(resource_id: str) -> str:
    return resource_id.split("/")[4]


def referenced(ctx: Context, value: Any, type_name: str, what: str) -> dict[str, Any] | None:
    """The resource a reference names, or Azure's 400 when it does not exist."""
    rid = ref_id(value)
    if rid is None:
        return None
    found = ctx.store.get_resource(rid)
    if found is None or found["type"].lower() != type_name.lower():
        raise bad_request(
            "InvalidResourceReference",
            f"Resource {rid} referenced by {what} was not found.",
        )
    return found


def before_delete(type_name: str):
    def register(fn: Callable[[Context, dict[str, Any]], None]):
        _BEFORE_DELETE[type_name.lower()] = fn
        return fn

    return register


def in_use(code: str, resource_id: str, by: str) -> AzureError:
    return bad_request(code, f"Resource {resource_id} is in use by {by} and cannot be deleted.")


@operations.on_complete(DELETE_KIND)
def _complete_delete(ctx: Context, params: dict[str, Any]) -> None:
    resource = ctx.store.get_resource(params["id"])
    if resource is None:
        return
    hook = _BEFORE_DELETE.get(resource["type"].lower())
    if hook:
        hook(ctx, resource)
    delete_tree(ctx, params["id"])


def put_answer(ctx: Context, api_version: str, resource: dict[str, Any], created: bool) -> Response:
    op = operations.start(
        ctx,
        namespace=NAMESPACE,
        location=resource.get("location") or "global",
        kind="network.noop",
        params={},
    )
    return json_response(
        resource, 201 if created else 200, headers=operations.headers(ctx, op, api_version)
    )


@operations.on_complete("network.noop")
def _noop(ctx: Context, params: dict[str, Any]) -> None:
    return None


def delete_answer(ctx: Context, api_version: str, resource: dict[str, Any] | None) -> Response:
    if resource is None:
        return empty(204)
    hook = _BEFORE_DELETE.get(resource["type"].lower())
    if hook:
        # Refuse before accepting, as Azure does for a resource in use.
        with ctx.store.transaction():
            hook(ctx, {**resource, "_dry_run": True})
    return operations.accepted(
        ctx,
        api_version,
        namespace=NAMESPACE,
        location=resource.get("location") or "global",
        kind=DELETE_KIND,
        params={"id": resource["id"]},
    )


@dataclass(frozen=True)
class PutRequest:
    """A PUT of a top-level network resource, as its type's handler receives it."""

    request: Request
    group: dict[str, Any]
    name: str
    id: str
    existing: dict[str, Any] | None
    body: dict[str, Any]
    location: str
    api_version: str

    @property
    def props(self) -> dict[str, Any]:
        return self.body.get("properties") or {}

    @property
    def old_props(self) -> dict[str, Any]:
        return (self.existing or {}).get("properties", {})

    def common(self, type_name: str) -> dict[str, Any]:
        """The fields every network resource has, for a new body of this PUT."""
        return {
            "name": self.name,
            "id": self.id,
            "etag": new_etag(),
            "type": type_name,
            "location": self.location,
            "tags": self.body.get("tags") or {},
            "systemData": system_data(self.existing, self.request.state.caller),
        }

    def answer(self, ctx: Context, resource: dict[str, Any]) -> Response:
        return put_answer(ctx, self.api_version, resource, self.existing is None)


def find_child(items: list[dict[str, Any]], kind: str, name: str, parent: dict[str, Any]) -> dict:
    for item in items:
        if item["name"].lower() == name.lower():
            return item
    raise child_not_found(kind, name, parent)


def register_top_level(
    router: Router,
    ctx: Context,
    *,
    collection: str,
    type_name: str,
    put: Callable[[PutRequest], Awaitable[Response]],
    present: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body,
) -> None:
    """PUT/GET/DELETE of ``.../resourceGroups/{rg}/providers/Microsoft.Network/<collection>/{name}``
    and the lists per group and subscription."""
    read, write, delete = f"{type_name}/read", f"{type_name}/write", f"{type_name}/delete"

    def rid(rg: str, name: str) -> str:
        return network_id(ctx, rg, collection, name)

    async def put_one(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        group = request.state.parent
        existing = ctx.store.get_resource(rid(rg, name))
        body = await json_body(request)
        location = check_location(
            body.get("location") or (existing or {}).get("location"), type_name
        )
        resource_id = network_id(ctx, group["name"], collection, name)
        return await put(
            PutRequest(request, group, name, resource_id, existing, body, location, api_version)
        )

    async def get_one(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        return json_response(present(resource_or_404(ctx, rid(rg, name), type_name, name, rg)))

    async def delete_one(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        return delete_answer(ctx, api_version, ctx.store.get_resource(rid(rg, name)))

    def readable(request: Request, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        caller = request.state.caller
        return [present(r) for r in found if is_allowed(ctx, caller.object_id, read, r["id"])]

    async def list_group(request: Request, sub: str, rg: str) -> Response:
        found = ctx.store.list_resources(type=type_name, parent=request.state.parent["id"])
        return json_response(list_page(readable(request, found)))

    async def list_sub(request: Request, sub: str) -> Response:
        return json_response(list_page(readable(request, ctx.store.list_resources(type=type_name))))

    base = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/" + collection
    scope = "{parent}/providers/" + type_name + "/{name}"
    in_group = in_resource_group(ctx)
    for method, handler, action in (
        ("PUT", put_one, write),
        ("GET", get_one, read),
        ("DELETE", delete_one, delete),
    ):
        # Python closures in a loop: name the handler after its collection for the request log.
        handler.__name__ = f"{method.lower()}_{collection}"
        router.add(method, base + "/{name}", handler, parent=in_group, action=action, scope=scope)
    list_group.__name__ = f"list_{collection}"
    list_sub.__name__ = f"list_all_{collection}"
    router.add("GET", base, list_group, parent=in_group)
    router.add(
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.Network/" + collection,
        list_sub,
        parent=in_subscription(ctx),
    )


def child_not_found(kind: str, name: str, parent: dict[str, Any]) -> AzureError:
    return not_found(
        "NotFound",
        f"Resource /{kind}/{name} not found under {parent['id']}.",
    )
