"""Environments: containers (``.../workspaces/{ws}/environments/{name}``) and their immutable
versions (``.../environments/{name}/versions/{version}``), each naming a Docker image.

A version's content (image, build, conda file, OS) never changes: a PUT with different content
answers 409, which is how ``ml_client.environments.create_or_update`` finds the next version
number; a PUT with the same content may change description, tags and properties.

Deviation: only image-based environments are supported; a docker build context (``build``)
is refused with a clear error, since the emulator builds no images.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.acr.images import parse_reference
from localazure.arm.resources import resource_or_404, system_data
from localazure.authorization.access import require
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request
from localazure.core.http import json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.ml import ENVIRONMENT_TYPE, ENVIRONMENT_VERSION_TYPE, WORKSPACE_PATH, workspaces

READ = f"{ENVIRONMENT_TYPE}/read"
WRITE = f"{ENVIRONMENT_TYPE}/write"
VERSION_READ = f"{ENVIRONMENT_VERSION_TYPE}/read"
VERSION_WRITE = f"{ENVIRONMENT_VERSION_TYPE}/write"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_CONTENT = ("image", "build", "condaFile", "osType", "inferenceConfig")
_MUTABLE = ("description", "tags", "properties")


def environment_id(workspace: dict[str, Any], name: str) -> str:
    return f"{workspace['id']}/environments/{name}"


def version_id(workspace: dict[str, Any], name: str, version: str) -> str:
    return f"{environment_id(workspace, name)}/versions/{version}"


def _rg(workspace: dict[str, Any]) -> str:
    return workspace["id"].split("/")[4]


def _check_name(value: str, what: str) -> None:
    if not _NAME.match(value):
        raise bad_request(
            "UserError",
            f"Invalid environment {what} '{value}': use letters, digits, '-', '_' and '.', "
            "starting with a letter or digit.",
        )


def _version_sort_key(version: str) -> tuple[int, float, str]:
    try:
        return (1, float(version), version)
    except ValueError:
        return (0, 0.0, version)


def _refresh_container(ctx: Context, workspace: dict[str, Any], name: str, caller: Any) -> dict:
    """Create the container if needed and recompute its latest and next versions."""
    cid = environment_id(workspace, name)
    existing = ctx.store.get_resource(cid)
    versions = [v["name"] for v in ctx.store.list_resources(parent=cid)]
    latest = max(versions, key=_version_sort_key) if versions else None
    try:
        next_version = str(int(float(latest)) + 1) if latest else "1"
    except ValueError:
        next_version = None
    container = existing or {
        "id": cid,
        "name": name,
        "type": ENVIRONMENT_TYPE,
        "properties": {
            "description": None,
            "tags": {},
            "properties": {},
            "isArchived": False,
            "provisioningState": "Succeeded",
        },
    }
    container["properties"].update(latestVersion=latest, nextVersion=next_version)
    container["systemData"] = system_data(existing, caller)
    ctx.store.put_resource(container)
    return container


def _version_body(given: dict[str, Any]) -> dict[str, Any]:
    if given.get("build"):
        raise bad_request(
            "UserError",
            "Environments built from a Docker build context are not supported by localazure; "
            "give an image (build it and push it to the registry, then reference it).",
        )
    image = given.get("image")
    if not image:
        raise bad_request("UserError", "An environment version needs an 'image'.")
    try:
        parse_reference(image)
    except ValueError as err:
        raise bad_request("UserError", f"Invalid image reference '{image}': {err}.") from None
    return {
        "description": given.get("description"),
        "tags": given.get("tags") or {},
        "properties": given.get("properties") or {},
        "isAnonymous": bool(given.get("isAnonymous", False)),
        "isArchived": bool(given.get("isArchived", False)),
        "autoRebuild": given.get("autoRebuild") or "Disabled",
        "build": None,
        "condaFile": given.get("condaFile"),
        "environmentType": "UserCreated",
        "image": image,
        "inferenceConfig": given.get("inferenceConfig"),
        "osType": given.get("osType") or "Linux",
        "provisioningState": "Succeeded",
        "stage": given.get("stage") or "Development",
    }


def find_version(ctx: Context, version_arm_id: str) -> dict[str, Any] | None:
    """The environment version an ARM id names, or None."""
    resource = ctx.store.get_resource(version_arm_id)
    if resource is None or resource["type"].lower() != ENVIRONMENT_VERSION_TYPE.lower():
        return None
    return resource


def register(router: Router, ctx: Context) -> None:
    async def put_version(
        request: Request, sub: str, rg: str, workspace: str, name: str, version: str
    ) -> Response:
        require_api_version(request)
        caller = request.state.caller
        ws = workspaces.load(ctx, sub, rg, workspace)
        rid = version_id(ws, name, version)
        require(ctx, caller, VERSION_WRITE, rid)
        _check_name(name, "name")
        _check_name(version, "version")
        body = await json_body(request)
        wanted = _version_body(body.get("properties") or {})
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            if existing is not None:
                current = existing["properties"]
                changed = [k for k in _CONTENT if current.get(k) != wanted.get(k)]
                if changed:
                    raise AzureError(
                        409,
                        "UserError",
                        f"Environment {name}:{version} already exists with a different "
                        f"{', '.join(changed)}; environment versions are immutable. Create a "
                        "new version instead.",
                    )
                wanted = {**current, **{k: wanted[k] for k in _MUTABLE}}
            resource = {
                "id": existing["id"] if existing else rid,
                "name": existing["name"] if existing else version,
                "type": ENVIRONMENT_VERSION_TYPE,
                "systemData": system_data(existing, caller),
                "properties": wanted,
            }
            ctx.store.put_resource(resource)
            _refresh_container(ctx, ws, name, caller)
        return json_response(resource, 200 if existing else 201)

    async def get_version(
        request: Request, sub: str, rg: str, workspace: str, name: str, version: str
    ) -> Response:
        require_api_version(request)
        ws = workspaces.load(ctx, sub, rg, workspace)
        rid = version_id(ws, name, version)
        require(ctx, request.state.caller, VERSION_READ, rid)
        label = f"{ws['name']}/environments/{name}/versions/{version}"
        return json_response(resource_or_404(ctx, rid, ENVIRONMENT_TYPE, label, _rg(ws)))

    async def list_versions(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        ws = workspaces.load(ctx, sub, rg, workspace)
        cid = environment_id(ws, name)
        require(ctx, request.state.caller, VERSION_READ, cid)
        items = ctx.store.list_resources(type=ENVIRONMENT_VERSION_TYPE, parent=cid)
        items.sort(key=lambda v: v["systemData"]["createdAt"], reverse=True)
        top = request.query_params.get("$top")
        if top and top.isdigit():
            items = items[: int(top)]
        return json_response({"value": items, "nextLink": None})

    async def put_container(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        caller = request.state.caller
        ws = workspaces.load(ctx, sub, rg, workspace)
        require(ctx, caller, WRITE, environment_id(ws, name))
        _check_name(name, "name")
        given = (await json_body(request)).get("properties") or {}
        with ctx.store.transaction():
            existed = ctx.store.get_resource(environment_id(ws, name)) is not None
            container = _refresh_container(ctx, ws, name, caller)
            container["properties"].update(
                {
                    k: given[k]
                    for k in ("description", "tags", "properties", "isArchived")
                    if k in given
                }
            )
            ctx.store.put_resource(container)
        return json_response(container, 200 if existed else 201)

    async def get_container(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        ws = workspaces.load(ctx, sub, rg, workspace)
        cid = environment_id(ws, name)
        require(ctx, request.state.caller, READ, cid)
        label = f"{ws['name']}/environments/{name}"
        return json_response(resource_or_404(ctx, cid, ENVIRONMENT_TYPE, label, _rg(ws)))

    async def list_containers(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        ws = workspaces.load(ctx, sub, rg, workspace)
        require(ctx, request.state.caller, READ, ws["id"])
        items = ctx.store.list_resources(type=ENVIRONMENT_TYPE, parent=ws["id"])
        return json_response(list_page(items))

    envs = WORKSPACE_PATH + "/environments"
    router.add("PUT", envs + "/{name}/versions/{version}", put_version)
    router.add("GET", envs + "/{name}/versions/{version}", get_version)
    router.add("GET", envs + "/{name}/versions", list_versions)
    router.add("PUT", envs + "/{name}", put_container)
    router.add("GET", envs + "/{name}", get_container)
    router.add("GET", envs, list_containers)
