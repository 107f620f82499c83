"""The ARM routes of container groups
(``{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}``): PUT (long-running:
``Creating`` until the images are pulled), GET, PATCH (tags), DELETE, list per group and
subscription, ``start``, ``stop``, ``restart``, and ``containers/{container}/logs``.

At the PUT every image is resolved as the group pulls it (``imageRegistryCredentials``: the
registry's admin user, or a user-assigned identity of the group with AcrPull), and an image it
may not pull is refused at once with ``InaccessibleImage``, as ACI does: nothing is created."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.acr.images import (
    ImagePullError,
    find_manifest,
    find_registry_by_login_server,
    parse_reference,
    resolve_image,
)
from localazure.acr.registries import admin_credentials_match
from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    in_resource_group,
    in_subscription,
    provider_id,
    resource_or_404,
    system_data,
)
from localazure.containerinstance import GROUP_TYPE, NAMESPACE, SECRETS_KIND, runner, spec
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.identity import principals
from localazure.nodes import pool as node_pool

READ = f"{GROUP_TYPE}/read"
WRITE = f"{GROUP_TYPE}/write"
DELETE = f"{GROUP_TYPE}/delete"
START = f"{GROUP_TYPE}/start/action"
STOP = f"{GROUP_TYPE}/stop/action"
RESTART = f"{GROUP_TYPE}/restart/action"
LOGS = f"{GROUP_TYPE}/containers/logs/read"
OPERATION_KIND = "aci-group-create"


def group_id(ctx: Context, rg: str, name: str) -> str:
    return provider_id(ctx, rg, NAMESPACE, "containerGroups", name)


def _identity(ctx: Context, group_rid: str, name: str, requested: Any, existing: dict | None):
    if not requested:
        return None
    kind = str(requested.get("type") or "None")
    normalised = {
        t.lower().replace(" ", ""): t
        for t in ("SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned", "None")
    }
    kind = normalised.get(kind.lower().replace(" ", ""))
    if kind is None:
        raise bad_request(
            "InvalidIdentityType", f"Identity type '{requested.get('type')}' is not valid."
        )
    if kind == "None":
        return None
    identity: dict[str, Any] = {"type": kind}
    if "SystemAssigned" in kind:
        previous = (existing or {}).get("identity") or {}
        if previous.get("principalId"):
            identity["principalId"] = previous["principalId"]
        else:
            identity["principalId"] = principals.create_managed_identity(ctx, name, group_rid)[
                "objectId"
            ]
        identity["tenantId"] = ctx.settings.tenant_id
    if "UserAssigned" in kind:
        assigned = {}
        for rid in requested.get("userAssignedIdentities") or {}:
            found = ctx.store.get_resource(rid)
            if found is None:
                raise bad_request(
                    "UserAssignedIdentityNotFound",
                    f"The user-assigned identity '{rid}' of the container group does not exist.",
                )
            assigned[found["id"]] = {
                "principalId": found["properties"]["principalId"],
                "clientId": found["properties"]["clientId"],
            }
        if not assigned:
            raise bad_request("InvalidIdentity", "UserAssigned needs userAssignedIdentities.")
        identity["userAssignedIdentities"] = assigned
    return identity


def _pull_as(ctx: Context, identity: dict | None, credential: dict[str, Any], password: str | None):
    """The object id the pull runs as, or ``"admin"`` for valid admin credentials."""
    if credential.get("identity"):
        wanted = credential["identity"].lower()
        for rid, value in ((identity or {}).get("userAssignedIdentities") or {}).items():
            if rid.lower() == wanted:
                return value["principalId"]
        raise bad_request(
            "InvalidImageRegistryCredentialIdentity",
            f"The identity '{credential['identity']}' of the registry credential for "
            f"'{credential['server']}' is not a user-assigned identity of the container group.",
        )
    registry = find_registry_by_login_server(ctx, credential["server"])
    if registry is not None and admin_credentials_match(
        ctx, registry, credential.get("username") or "", password or ""
    ):
        return "admin"
    return None


def _resolve_images(ctx: Context, name: str, props: dict, identity: dict | None, secrets: dict):
    """Each container's image as the group pulls it; ``InaccessibleImage`` when it cannot."""
    credentials = {c["server"]: c for c in props["imageRegistryCredentials"]}
    resolved = {}
    for container in props["containers"]:
        image = container["properties"]["image"]
        try:
            ref = parse_reference(image)
        except ValueError:
            ref = None
        credential = credentials.get(ref.registry) if ref else None
        puller = (
            _pull_as(ctx, identity, credential, secrets["passwords"].get(credential["server"]))
            if credential
            else None
        )
        try:
            if puller == "admin":
                registry = find_registry_by_login_server(ctx, ref.registry)
                manifest = find_manifest(ctx, registry["id"], ref.repository, ref.reference)
                if manifest is None:
                    raise ImagePullError("not_found", f"{image}: manifest unknown")
                resolved[container["name"]] = {
                    "digest": manifest["digest"],
                    "size": manifest["imageSize"],
                }
            else:
                resolved[container["name"]] = resolve_image(ctx, image, puller)
        except ImagePullError as err:
            raise bad_request(
                "InaccessibleImage",
                f"The image '{image}' in container group '{name}' is not accessible. Please check "
                f"the image and registry credential. ({err.message})",
            ) from None
    return resolved


def register(router: Router, ctx: Context, group_runner: runner.GroupRunner) -> None:
    runtime = group_runner.runtime

    def load(rg: str, name: str) -> dict[str, Any]:
        return resource_or_404(ctx, group_id(ctx, rg, name), GROUP_TYPE, name, rg)

    @operations.on_complete(OPERATION_KIND)
    def _created(ctx: Context, params: dict[str, Any]) -> Any:
        """The pull is over: the containers start now (if the runner has not started them)."""
        with ctx.store.transaction():
            group = ctx.store.get_resource(params["id"])
            if group is None:
                return None
            group_runner.start_if_due(group, ctx.clock())
            if group["properties"]["provisioningState"] == "Failed":
                events = [
                    e["message"]
                    for c in group["properties"]["containers"]
                    for e in c["properties"].get("instanceView", {}).get("events", [])
                    if e["type"] == "Warning"
                ]
                raise AzureError(
                    400, "ContainerGroupDeploymentFailed", "; ".join(events) or "failed to start"
                )
            return group

    async def put_group(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        spec.check_name(name)
        body = await json_body(request)
        rid = group_id(ctx, rg, name)
        location = check_location(body.get("location"), GROUP_TYPE)
        props, secrets = spec.parse(body)
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            identity = _identity(ctx, rid, name, body.get("identity"), existing)
            images = _resolve_images(ctx, name, props, identity, secrets)
            secrets["images"] = images
            if existing is not None:
                runner.forget(ctx, runtime, existing, ctx.clock())
            group = {
                "id": rid,
                "name": name,
                "type": GROUP_TYPE,
                "location": location,
                "tags": body.get("tags") or {},
                "properties": {**props, "provisioningState": "Pending"},
                "systemData": system_data(existing, request.state.caller),
            }
            if identity:
                group["identity"] = identity
            if body.get("zones"):
                group["zones"] = body["zones"]
            now = ctx.clock()
            pull_s = max(node_pool.timing(ctx).pull(sum(i["size"] for i in images.values())), 0.0)
            ctx.store.put(SECRETS_KIND, rid.lower(), secrets)
            runner.schedule_start(ctx, group, now, pull_s)
            ctx.store.put_resource(group)
            op = operations.start(
                ctx,
                namespace=NAMESPACE,
                location=location,
                kind=OPERATION_KIND,
                params={"id": rid},
                duration=pull_s,
            )
        return json_response(
            group, 200 if existing else 201, operations.headers(ctx, op, api_version)
        )

    async def get_group(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        return json_response(load(rg, name))

    async def patch_group(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        body = await json_body(request)
        with ctx.store.transaction():
            group = load(rg, name)
            if "tags" in body:
                group["tags"] = body["tags"] or {}
            group["systemData"] = system_data(group, request.state.caller)
            ctx.store.put_resource(group)
        return json_response(group)

    async def delete_group(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        with ctx.store.transaction():
            group = ctx.store.get_resource(group_id(ctx, rg, name))
            if group is None:
                return empty(204)
            runner.forget(ctx, runtime, group, ctx.clock())
            ctx.store.delete_resource(group["id"])
        return json_response(group)

    async def list_in_group(request: Request, sub: str, rg: str) -> Response:
        require_api_version(request)
        items = ctx.store.list_resources(type=GROUP_TYPE, parent=request.state.parent["id"])
        return json_response(list_page(items))

    async def list_in_subscription(request: Request, sub: str) -> Response:
        require_api_version(request)
        return json_response(list_page(ctx.store.list_resources(type=GROUP_TYPE)))

    async def stop_group(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        with ctx.store.transaction():
            group = load(rg, name)
            runner.stop(ctx, runtime, group, ctx.clock())
            ctx.store.put_resource(group)
        return empty(204)

    def _restart(request: Request, rg: str, name: str, status: int) -> Response:
        api_version = require_api_version(request)
        with ctx.store.transaction():
            group = load(rg, name)
            now = ctx.clock()
            runner.stop(ctx, runtime, group, now)
            for container in group["properties"]["containers"]:
                view = container["properties"].setdefault("instanceView", {})
                view["restartCount"] = view.get("restartCount", 0) + 1
            runner.schedule_start(ctx, group, now, 0.0)
            ctx.store.put_resource(group)
            op = operations.start(
                ctx,
                namespace=NAMESPACE,
                location=group["location"],
                kind=OPERATION_KIND,
                params={"id": group["id"]},
            )
        return empty(status, operations.headers(ctx, op, api_version))

    async def start_group(request: Request, sub: str, rg: str, name: str) -> Response:
        return _restart(request, rg, name, 202)

    async def restart_group(request: Request, sub: str, rg: str, name: str) -> Response:
        # azure-mgmt-containerinstance 10.1.0 accepts only 204 for the restart's first answer.
        return _restart(request, rg, name, 204)

    async def container_logs(request: Request, sub: str, rg: str, name: str, container: str):
        require_api_version(request)
        group = load(rg, name)
        if not any(c["name"] == container for c in group["properties"]["containers"]):
            raise bad_request(
                "ContainerNotFound",
                f"The container '{container}' does not exist in container group '{name}'.",
            )
        content = runner.current_log(ctx, group, container)
        tail = request.query_params.get("tail")
        if tail and tail.isdigit():
            lines = content.splitlines(keepends=True)
            content = "".join(lines[-int(tail) :]) if int(tail) else ""
        return json_response({"content": content})

    prefix = f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/{GROUP_TYPE}"
    one = prefix + "/{name}"
    scope = "{parent}/providers/" + GROUP_TYPE + "/{name}"
    in_group, in_sub = in_resource_group(ctx), in_subscription(ctx)
    router.add("PUT", one, put_group, parent=in_group, action=WRITE, scope=scope)
    router.add("GET", one, get_group, parent=in_group, action=READ, scope=scope)
    router.add("PATCH", one, patch_group, parent=in_group, action=WRITE, scope=scope)
    router.add("DELETE", one, delete_group, parent=in_group, action=DELETE, scope=scope)
    router.add("POST", one + "/stop", stop_group, parent=in_group, action=STOP, scope=scope)
    router.add("POST", one + "/start", start_group, parent=in_group, action=START, scope=scope)
    router.add(
        "POST", one + "/restart", restart_group, parent=in_group, action=RESTART, scope=scope
    )
    router.add(
        "GET",
        one + "/containers/{container}/logs",
        container_logs,
        parent=in_group,
        action=LOGS,
        scope=scope,
    )
    router.add("GET", prefix, list_in_group, parent=in_group, action=READ)
    router.add(
        "GET",
        f"/subscriptions/{{sub}}/providers/{GROUP_TYPE}",
        list_in_subscription,
        parent=in_sub,
        action=READ,
    )
