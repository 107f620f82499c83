"""Managed disks (``Microsoft.Compute/disks``): the OS disk a VM is created with (its content is
the VM's sandbox directory, ``sandbox``) and empty data disks. Get, list and delete; a disk
attached to a VM cannot be deleted."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import (
    delete_tree,
    in_resource_group,
    in_subscription,
    now_iso,
    provider_id,
    resource_or_404,
)
from localazure.compute import DISK_TYPE, NAMESPACE, sandbox
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import conflict
from localazure.core.http import empty, json_response, list_page, require_api_version
from localazure.core.router import Router

DELETE_KIND = "compute.disk.delete"


def disk_id(ctx: Context, rg: str, name: str) -> str:
    return provider_id(ctx, rg, NAMESPACE, "disks", name)


def create(
    ctx: Context,
    rg: str,
    name: str,
    *,
    location: str,
    size_gb: int,
    sku: str,
    vm_id: str,
    os_type: str | None,
    image: dict[str, Any] | None,
) -> dict[str, Any]:
    rid = disk_id(ctx, rg, name)
    properties: dict[str, Any] = {
        "creationData": {"createOption": "FromImage" if image else "Empty"},
        "diskSizeGB": size_gb,
        "diskIOPSReadWrite": 500,
        "diskMBpsReadWrite": 60,
        "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
        "timeCreated": now_iso(),
        "provisioningState": "Succeeded",
        "diskState": "Attached",
        "diskSizeBytes": size_gb * 1024**3,
        "uniqueId": str(uuid.uuid4()),
        "networkAccessPolicy": "AllowAll",
        "publicNetworkAccess": "Enabled",
    }
    if os_type:
        properties["osType"] = os_type
        properties["hyperVGeneration"] = (image or {}).get("hyperVGeneration", "V1")
    if image:
        properties["creationData"]["imageReference"] = {"id": image["id"]} if "id" in image else {}
    disk = {
        "id": rid,
        "name": name,
        "type": DISK_TYPE,
        "location": location,
        "tags": {},
        "managedBy": vm_id,
        "sku": {"name": sku, "tier": sku.split("_")[0]},
        "properties": properties,
    }
    ctx.store.put_resource(disk)
    return disk


def set_attached(ctx: Context, rid: str, vm_id: str | None) -> None:
    disk = ctx.store.get_resource(rid)
    if disk is None:
        return
    if vm_id:
        disk["managedBy"] = vm_id
        disk["properties"]["diskState"] = "Attached"
    else:
        disk.pop("managedBy", None)
        disk["properties"]["diskState"] = "Unattached"
    ctx.store.put_resource(disk)


def delete(ctx: Context, rid: str) -> None:
    """Delete the disk resource and its content."""
    delete_tree(ctx, rid)
    sandbox.remove(ctx, rid)


def forget_under(ctx: Context, resource_id: str) -> None:
    """Delete hook: the content of disks deleted with their group goes too."""
    target = resource_id.rstrip("/").lower()
    for disk in ctx.store.list_resources(type=DISK_TYPE):
        if disk["id"].lower() == target or disk["id"].lower().startswith(target + "/"):
            sandbox.remove(ctx, disk["id"])


@operations.on_complete(DELETE_KIND)
def _complete_delete(ctx: Context, params: dict[str, Any]) -> None:
    delete(ctx, params["id"])


def register(router: Router, ctx: Context) -> None:
    async def get_disk(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        return json_response(resource_or_404(ctx, disk_id(ctx, rg, name), DISK_TYPE, name, rg))

    async def delete_disk(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        disk = ctx.store.get_resource(disk_id(ctx, rg, name))
        if disk is None:
            return empty(204)
        if disk.get("managedBy"):
            raise conflict(
                "OperationNotAllowed",
                f"Disk {name} is attached to VM {disk['managedBy']}.",
            )
        return operations.accepted(
            ctx,
            api_version,
            namespace=NAMESPACE,
            location=disk["location"],
            kind=DELETE_KIND,
            params={"id": disk["id"]},
        )

    async def list_group(request: Request, sub: str, rg: str) -> Response:
        found = ctx.store.list_resources(type=DISK_TYPE, parent=request.state.parent["id"])
        return json_response(list_page(found))

    async def list_sub(request: Request, sub: str) -> Response:
        return json_response(list_page(ctx.store.list_resources(type=DISK_TYPE)))

    base = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/disks"
    scope = "{parent}/providers/" + DISK_TYPE + "/{name}"
    in_group = in_resource_group(ctx)
    router.add(
        "GET", base + "/{name}", get_disk, parent=in_group, action=f"{DISK_TYPE}/read", scope=scope
    )
    router.add(
        "DELETE",
        base + "/{name}",
        delete_disk,
        parent=in_group,
        action=f"{DISK_TYPE}/delete",
        scope=scope,
    )
    router.add("GET", base, list_group, parent=in_group)
    router.add(
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.Compute/disks",
        list_sub,
        parent=in_subscription(ctx),
    )
