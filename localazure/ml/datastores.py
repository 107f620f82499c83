"""Datastores (``.../workspaces/{ws}/datastores/{name}``): a workspace's name for a blob
container, which job inputs address as ``azureml://datastores/<name>/paths/<path>``.

Only ``AzureBlob`` datastores exist here, and only identity-based ones (``credentials`` of type
``None``): a job reads through them with its compute's managed identity, which needs a data role
(Storage Blob Data Reader) on the container. Account-key and SAS credentials are refused, so
that no secret is ever stored in a datastore (see docs/emulator.md).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import resource_or_404, system_data
from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.ml import WORKSPACE_PATH, WORKSPACE_TYPE, workspaces

DATASTORE_TYPE = f"{WORKSPACE_TYPE}/datastores"
READ = f"{DATASTORE_TYPE}/read"
WRITE = f"{DATASTORE_TYPE}/write"
DELETE = f"{DATASTORE_TYPE}/delete"
_NAME = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_URI = re.compile(r"^azureml://datastores/(?P<name>[^/]+)/paths/(?P<path>.*)$", re.IGNORECASE)


def datastore_id(workspace: dict[str, Any], name: str) -> str:
    return f"{workspace['id']}/datastores/{name}"


def get(ctx: Context, workspace: dict[str, Any], name: str) -> dict[str, Any] | None:
    return ctx.store.get_resource(datastore_id(workspace, name))


def parse_uri(uri: str) -> tuple[str, str] | None:
    """(datastore name, path) of an ``azureml://datastores/<name>/paths/<path>`` URI."""
    match = _URI.match(uri or "")
    return (match["name"], match["path"].strip("/")) if match else None


def _checked(name: str, props: dict[str, Any]) -> dict[str, Any]:
    if not _NAME.match(name):
        raise bad_request(
            "UserError", f"Invalid datastore name '{name}': use letters, digits and '_'."
        )
    if props.get("datastoreType") != "AzureBlob":
        raise bad_request(
            "UserError",
            f"Datastore type '{props.get('datastoreType')}' is not supported by localazure; "
            "use an AzureBlob datastore.",
        )
    for field in ("accountName", "containerName"):
        if not props.get(field):
            raise bad_request("UserError", f"An AzureBlob datastore needs '{field}'.")
    credentials = props.get("credentials") or {"credentialsType": "None"}
    if credentials.get("credentialsType") != "None":
        raise bad_request(
            "UserError",
            f"Datastore credentials of type '{credentials.get('credentialsType')}' are not "
            "supported by localazure: use an identity-based datastore (credentials None) and "
            "grant the compute's identity Storage Blob Data Reader on the container.",
        )
    return {
        "datastoreType": "AzureBlob",
        "accountName": props["accountName"],
        "containerName": props["containerName"],
        "endpoint": props.get("endpoint") or "core.windows.net",
        "protocol": props.get("protocol") or "https",
        "serviceDataAccessAuthIdentity": props.get("serviceDataAccessAuthIdentity") or "None",
        "credentials": {"credentialsType": "None"},
        "description": props.get("description"),
        "tags": props.get("tags") or {},
        "properties": props.get("properties") or {},
        "isDefault": False,
    }


def register(router: Router, ctx: Context) -> None:
    async def put_datastore(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        ws = request.state.parent
        props = _checked(name, (await json_body(request)).get("properties") or {})
        with ctx.store.transaction():
            existing = get(ctx, ws, name)
            resource = {
                "id": datastore_id(ws, name),
                "name": name,
                "type": DATASTORE_TYPE,
                "properties": props,
                "systemData": system_data(existing, request.state.caller),
            }
            ctx.store.put_resource(resource)
        return json_response(resource, 200 if existing else 201)

    async def get_datastore(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        ws = request.state.parent
        label = f"{ws['name']}/datastores/{name}"
        return json_response(
            resource_or_404(ctx, datastore_id(ws, name), DATASTORE_TYPE, label, rg)
        )

    async def delete_datastore(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        ws = request.state.parent
        if get(ctx, ws, name) is None:
            return empty(204)
        ctx.store.delete_resource(datastore_id(ws, name))
        return empty(200)

    async def list_datastores(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        ws = request.state.parent
        items = ctx.store.list_resources(type=DATASTORE_TYPE, parent=ws["id"])
        return json_response(list_page(items))

    base = WORKSPACE_PATH + "/datastores"
    in_ws = workspaces.in_workspace(ctx)
    one = "{parent}/datastores/{name}"
    router.add("PUT", base + "/{name}", put_datastore, parent=in_ws, action=WRITE, scope=one)
    router.add("GET", base + "/{name}", get_datastore, parent=in_ws, action=READ, scope=one)
    router.add("DELETE", base + "/{name}", delete_datastore, parent=in_ws, action=DELETE, scope=one)
    router.add("GET", base, list_datastores, parent=in_ws, action=READ)
