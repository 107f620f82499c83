"""Blob containers as ARM resources (``.../storageAccounts/{name}/blobServices/default/containers/
{container}``): created, read, listed and deleted through the management API (as ARM templates,
Bicep and azure-mgmt-storage do) or through the data plane, the same container either way. Being
ARM resources, containers can be the scope of a role assignment (Storage Blob Data Reader on one
container)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import (
    provider_id,
    resource_group_or_404,
    resource_or_404,
    subscription_id_or_404,
)
from localazure.authorization.access import require
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request, not_found
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.storage import ACCOUNT_TYPE, NAMESPACE, blobs

CONTAINER_TYPE = f"{ACCOUNT_TYPE}/blobServices/containers"
READ = f"{CONTAINER_TYPE}/read"
WRITE = f"{CONTAINER_TYPE}/write"
DELETE = f"{CONTAINER_TYPE}/delete"
PUBLIC_ACCESS = {"none": None, "container": "container", "blob": "blob"}


def container_id(account: dict[str, Any], name: str) -> str:
    return f"{account['id']}/blobServices/default/containers/{name}"


def _arm_body(account: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": container_id(account, record["name"]),
        "name": record["name"],
        "type": CONTAINER_TYPE,
        "etag": record["etag"],
        "properties": {
            "publicAccess": {"container": "Container", "blob": "Blob"}.get(
                record.get("public_access") or "", "None"
            ),
            "metadata": record["metadata"],
            "lastModifiedTime": blobs.iso_date(record["last_modified"]),
            "leaseStatus": "Unlocked",
            "leaseState": "Available",
            "hasImmutabilityPolicy": False,
            "hasLegalHold": False,
            "defaultEncryptionScope": "$account-encryption-key",
            "denyEncryptionScopeOverride": False,
            "deleted": False,
        },
    }


def create(
    ctx: Context,
    account: dict[str, Any],
    name: str,
    metadata: dict[str, str],
    public_access: str | None,
) -> dict[str, Any]:
    """Create the container's record and its ARM resource together."""
    if public_access and not account["properties"].get("allowBlobPublicAccess"):
        raise blobs.BlobStateError(
            409,
            "PublicAccessNotPermitted",
            "Public access is not permitted on this storage account.",
        )
    with ctx.store.transaction():
        record = blobs.create_container(ctx, account["name"], name, metadata, public_access)
        ctx.store.put_resource(_arm_body(account, record))
    return record


def delete(ctx: Context, account: dict[str, Any], name: str) -> None:
    with ctx.store.transaction():
        blobs.delete_container(ctx, account["name"], name)
        ctx.store.delete_resource(container_id(account, name))


def name_is_valid(name: str) -> bool:
    return blobs.CONTAINER_NAME.match(name) is not None


def register(router: Router, ctx: Context) -> None:
    def account_or_404(request: Request, action: str, sub: str, rg: str, name: str, cid: str):
        subscription_id_or_404(ctx, sub)
        account_id = provider_id(ctx, rg, NAMESPACE, "storageAccounts", name)
        require(ctx, request.state.caller, action, cid or account_id)
        resource_group_or_404(ctx, sub, rg)
        return resource_or_404(ctx, account_id, ACCOUNT_TYPE, name, rg)

    def scope(rg: str, name: str, container: str) -> str:
        return provider_id(
            ctx,
            rg,
            NAMESPACE,
            "storageAccounts",
            name,
            "blobServices",
            "default",
            "containers",
            container,
        )

    async def put_container(request: Request, sub: str, rg: str, name: str, container: str):
        require_api_version(request)
        account = account_or_404(request, WRITE, sub, rg, name, scope(rg, name, container))
        if not name_is_valid(container):
            raise bad_request(
                "ContainerOperationFailure",
                "The specifed resource name contains invalid characters.",
            )
        properties = (await json_body(request)).get("properties") or {}
        requested_access = str(properties.get("publicAccess") or "None").lower()
        if requested_access not in PUBLIC_ACCESS:
            raise bad_request(
                "InvalidValuesForRequestParameters",
                f"Values for request parameters are invalid: publicAccess '{requested_access}'.",
            )
        metadata = properties.get("metadata") or {}
        record = blobs.get_container(ctx, account["name"], container)
        try:
            if record is None:
                record = create(ctx, account, container, metadata, PUBLIC_ACCESS[requested_access])
                return json_response(_arm_body(account, record), 201)
        except blobs.BlobStateError as err:
            raise AzureError(err.status, err.code, err.message) from None
        record = blobs.set_container_metadata(ctx, account["name"], record, metadata)
        body = _arm_body(account, record)
        ctx.store.put_resource(body)
        return json_response(body)

    async def get_container(request: Request, sub: str, rg: str, name: str, container: str):
        require_api_version(request)
        account = account_or_404(request, READ, sub, rg, name, scope(rg, name, container))
        record = blobs.get_container(ctx, account["name"], container)
        if record is None:
            raise not_found("ContainerNotFound", "The specified container does not exist.")
        return json_response(_arm_body(account, record))

    async def delete_container(request: Request, sub: str, rg: str, name: str, container: str):
        require_api_version(request)
        account = account_or_404(request, DELETE, sub, rg, name, scope(rg, name, container))
        if blobs.get_container(ctx, account["name"], container) is None:
            return empty(204)
        delete(ctx, account, container)
        return empty(200)

    async def list_containers(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = account_or_404(request, READ, sub, rg, name, "")
        return json_response(
            list_page([_arm_body(account, c) for c in blobs.list_containers(ctx, account["name"])])
        )

    one = (
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/"
        "{name}/blobServices/default/containers"
    )
    router.add("GET", one, list_containers)
    router.add("PUT", one + "/{container}", put_container)
    router.add("GET", one + "/{container}", get_container)
    router.add("DELETE", one + "/{container}", delete_container)
