"""Environments: containers (``.../workspaces/{ws}/environments/{name}``) and their immutable
versions (``.../environments/{name}/versions/{version}``), each naming a Docker image.

A version's content (image, build, conda file, OS) never changes: a PUT with different content
answers 409, which is how ``ml_client.environments.create_or_update`` finds the next version
number; a PUT with the same content may change description, tags and properties.

A version with a Docker build context (``build.contextUri``, ``build.dockerfilePath``) is
accepted and "built" at once into the workspace's registry (``properties.containerRegistry``) as
``azureml/azureml_<hash>:latest``, an image with a generated manifest: the emulator runs no
Docker build and reads neither the context nor the Dockerfile (see docs/emulator.md).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.acr import catalog
from localazure.acr.images import parse_reference, put_image
from localazure.arm.resources import now_iso, resource_or_404, system_data
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
BUILT_IMAGE_KIND = "ml-environment-image"
_BUILT_LAYER_SIZES = [30_000_000, 120_000_000]


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


def _build_context(given: dict[str, Any]) -> dict[str, Any] | None:
    build = given.get("build")
    if not build:
        return None
    context = build.get("contextUri") if isinstance(build, dict) else None
    if not context:
        raise bad_request("UserError", "An environment build needs 'build.contextUri'.")
    return {"contextUri": context, "dockerfilePath": build.get("dockerfilePath") or "Dockerfile"}


def _version_body(given: dict[str, Any]) -> dict[str, Any]:
    build = _build_context(given)
    image = given.get("image")
    if build and image:
        raise bad_request("UserError", "Give either an 'image' or a 'build', not both.")
    if not build and not image:
        raise bad_request("UserError", "An environment version needs an 'image' or a 'build'.")
    if image:
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
        "build": build,
        "condaFile": given.get("condaFile"),
        "environmentType": "UserCreated",
        "image": image,
        "inferenceConfig": given.get("inferenceConfig"),
        "osType": given.get("osType") or "Linux",
        "provisioningState": "Succeeded",
        "stage": given.get("stage") or "Development",
    }


def _workspace_registry(ctx: Context, workspace: dict[str, Any]) -> dict[str, Any]:
    registry_id = workspace["properties"].get("containerRegistry")
    registry = ctx.store.get_resource(registry_id) if registry_id else None
    if registry is None:
        raise bad_request(
            "UserError",
            "An environment built from a Docker build context needs the workspace's container "
            "registry (properties.containerRegistry), which is not set or does not exist.",
        )
    return registry


def _build_image(ctx: Context, workspace: dict[str, Any], version_rid: str, build: dict) -> str:
    """Store the environment's image in the workspace's registry; return its reference."""
    registry = _workspace_registry(ctx, workspace)
    digest = hashlib.sha256(
        f"{version_rid.lower()}|{build['contextUri']}|{build['dockerfilePath']}".encode()
    ).hexdigest()[:32]
    login = registry["properties"]["loginServer"]
    repository = f"azureml/azureml_{digest}"
    image = catalog.synthetic_image(
        login,
        repository,
        "latest",
        _BUILT_LAYER_SIZES,
        env=[catalog.DEFAULT_PATH],
        created=now_iso(),
    )
    put_image(ctx, registry["id"], repository, image.record(), "latest")
    reference = f"{login}/{repository}:latest"
    ctx.store.put(BUILT_IMAGE_KIND, version_rid.lower(), {"image": reference})
    return reference


def image_of(ctx: Context, version: dict[str, Any]) -> str:
    """The image a job of this environment version runs: its own, or the one built for it."""
    if version["properties"].get("image"):
        return version["properties"]["image"]
    return ctx.store.get(BUILT_IMAGE_KIND, version["id"].lower())["image"]


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
        ws = request.state.parent
        rid = version_id(ws, name, version)
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
            if wanted["build"] and existing is None:
                _build_image(ctx, ws, rid, wanted["build"])
            _refresh_container(ctx, ws, name, caller)
        return json_response(resource, 200 if existing else 201)

    async def get_version(
        request: Request, sub: str, rg: str, workspace: str, name: str, version: str
    ) -> Response:
        require_api_version(request)
        ws = request.state.parent
        rid = version_id(ws, name, version)
        label = f"{ws['name']}/environments/{name}/versions/{version}"
        return json_response(resource_or_404(ctx, rid, ENVIRONMENT_TYPE, label, _rg(ws)))

    async def list_versions(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        ws = request.state.parent
        cid = environment_id(ws, name)
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
        ws = request.state.parent
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
        ws = request.state.parent
        cid = environment_id(ws, name)
        label = f"{ws['name']}/environments/{name}"
        return json_response(resource_or_404(ctx, cid, ENVIRONMENT_TYPE, label, _rg(ws)))

    async def list_containers(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        ws = request.state.parent
        items = ctx.store.list_resources(type=ENVIRONMENT_TYPE, parent=ws["id"])
        return json_response(list_page(items))

    envs = WORKSPACE_PATH + "/environments"
    in_ws = workspaces.in_workspace(ctx)
    container = "{parent}/environments/{name}"
    version = container + "/versions/{version}"
    versions = envs + "/{name}/versions"
    router.add(
        "PUT",
        versions + "/{version}",
        put_version,
        parent=in_ws,
        action=VERSION_WRITE,
        scope=version,
    )
    router.add(
        "GET",
        versions + "/{version}",
        get_version,
        parent=in_ws,
        action=VERSION_READ,
        scope=version,
    )
    router.add("GET", versions, list_versions, parent=in_ws, action=VERSION_READ, scope=container)
    router.add("PUT", envs + "/{name}", put_container, parent=in_ws, action=WRITE, scope=container)
    router.add("GET", envs + "/{name}", get_container, parent=in_ws, action=READ, scope=container)
    router.add("GET", envs, list_containers, parent=in_ws, action=READ)
