"""``Microsoft.Compute/images``: a managed image captured from a generalized VM
(``properties.sourceVirtualMachine``). Its content is a copy of the VM's OS disk directory, so a
VM created from the image starts with what the source VM had (images pulled, files written)."""

from __future__ import annotations

import shutil
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
from localazure.compute import IMAGE_TYPE, NAMESPACE, VM_TYPE, power, sandbox
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import bad_request, conflict
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router


def image_id(ctx: Context, rg: str, name: str) -> str:
    return provider_id(ctx, rg, NAMESPACE, "images", name)


def present(image: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in image.items() if not k.startswith("_")}


def forget_under(ctx: Context, resource_id: str) -> None:
    target = resource_id.rstrip("/").lower()
    for image in ctx.store.list_resources(type=IMAGE_TYPE):
        if image["id"].lower() == target or image["id"].lower().startswith(target + "/"):
            sandbox.remove(ctx, image["id"])


@operations.on_complete("compute.image.delete")
def _complete_delete(ctx: Context, params: dict[str, Any]) -> None:
    delete_tree(ctx, params["id"])
    sandbox.remove(ctx, params["id"])


def register(router: Router, ctx: Context) -> None:
    async def put_image(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        body = await json_body(request)
        props = body.get("properties") or {}
        rid = image_id(ctx, rg, name)
        existing = ctx.store.get_resource(rid)
        source_id = (props.get("sourceVirtualMachine") or {}).get("id")
        if existing is not None:
            existing["tags"] = body.get("tags") or existing.get("tags") or {}
            ctx.store.put_resource(existing)
            return json_response(present(existing))
        if not source_id:
            raise bad_request(
                "InvalidParameter",
                "Either 'sourceVirtualMachine' or 'storageProfile' with a managed OS disk is "
                "required to create an image; the emulator supports 'sourceVirtualMachine'.",
            )
        vm = ctx.store.get_resource(source_id)
        if vm is None or vm["type"].lower() != VM_TYPE.lower():
            raise bad_request(
                "NotFound", f"The source virtual machine '{source_id}' was not found."
            )
        record = power.get(ctx, vm["id"]) or {}
        if not record.get("generalized"):
            raise conflict(
                "OperationNotAllowed",
                f"The operation 'Create Image' is not allowed on VM '{vm['name']}' since the VM "
                "is not generalized. Generalize the VM (az vm generalize) first.",
            )
        location = check_location(body.get("location") or vm["location"], IMAGE_TYPE)
        os_disk = vm["properties"]["storageProfile"]["osDisk"]
        image = {
            "id": rid,
            "name": name,
            "type": IMAGE_TYPE,
            "location": location,
            "tags": body.get("tags") or {},
            "systemData": system_data(None, request.state.caller),
            "_disk": rid,
            "properties": {
                "sourceVirtualMachine": {"id": vm["id"]},
                "storageProfile": {
                    "osDisk": {
                        "osType": "Linux",
                        "osState": "Generalized",
                        "diskSizeGB": os_disk.get("diskSizeGB", 30),
                        "caching": os_disk.get("caching", "ReadWrite"),
                        "storageAccountType": os_disk["managedDisk"]["storageAccountType"],
                        "managedDisk": {"id": os_disk["managedDisk"]["id"]},
                    },
                    "dataDisks": [],
                    "zoneResilient": False,
                },
                "provisioningState": "Succeeded",
                "hyperVGeneration": (vm.get("_image") or {}).get("hyperVGeneration", "V1"),
            },
        }
        target = sandbox.disk_dir(ctx, rid)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(sandbox.disk_dir(ctx, record["disk_id"]), target, symlinks=True)
        ctx.store.put_resource(image)
        op = operations.start(
            ctx, namespace=NAMESPACE, location=location, kind="compute.vm.power", params={}
        )
        return json_response(present(image), 201, headers=operations.headers(ctx, op, api_version))

    async def get_image(request: Request, sub: str, rg: str, name: str) -> Response:
        return json_response(
            present(resource_or_404(ctx, image_id(ctx, rg, name), IMAGE_TYPE, name, rg))
        )

    async def delete_image(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        image = ctx.store.get_resource(image_id(ctx, rg, name))
        if image is None:
            return empty(204)
        return operations.accepted(
            ctx,
            api_version,
            namespace=NAMESPACE,
            location=image["location"],
            kind="compute.image.delete",
            params={"id": image["id"]},
        )

    async def list_group(request: Request, sub: str, rg: str) -> Response:
        found = ctx.store.list_resources(type=IMAGE_TYPE, parent=request.state.parent["id"])
        return json_response(list_page([present(i) for i in found]))

    async def list_sub(request: Request, sub: str) -> Response:
        return json_response(
            list_page([present(i) for i in ctx.store.list_resources(type=IMAGE_TYPE)])
        )

    base = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/images"
    scope = "{parent}/providers/" + IMAGE_TYPE + "/{name}"
    in_group = in_resource_group(ctx)
    for method, handler, verb in (
        ("PUT", put_image, "write"),
        ("GET", get_image, "read"),
        ("DELETE", delete_image, "delete"),
    ):
        router.add(
            method,
            base + "/{name}",
            handler,
            parent=in_group,
            action=f"{IMAGE_TYPE}/{verb}",
            scope=scope,
        )
    router.add("GET", base, list_group, parent=in_group)
    router.add(
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.Compute/images",
        list_sub,
        parent=in_subscription(ctx),
    )
