"""``Microsoft.Compute/virtualMachines``: create (validated before anything is made: size,
image, SSH keys, NICs, identities, security type, core quota), get (with ``$expand=instanceView``),
instance view, lists per group and subscription, power actions (start, powerOff, restart,
deallocate), generalize, and delete with the NICs, public IPs and disks whose ``deleteOption`` is
``Delete``. Shapes follow api-version 2024-07-01 (azure-mgmt-compute 33's default)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    delete_tree,
    in_resource_group,
    in_subscription,
    now_iso,
    provider_id,
    resource_or_404,
    system_data,
)
from localazure.authorization.access import is_allowed
from localazure.compute import IMAGE_TYPE, NAMESPACE, VM_TYPE, disks, marketplace, power, sandbox
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request, conflict
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.identity import principals
from localazure.network import NIC_TYPE, nics
from localazure.nodes import pool as node_pool
from localazure.nodes import vm_catalog

READ, WRITE, DELETE = f"{VM_TYPE}/read", f"{VM_TYPE}/write", f"{VM_TYPE}/delete"
SECURITY_TYPES = {
    "standard": "Standard",
    "trustedlaunch": "TrustedLaunch",
    "confidentialvm": "ConfidentialVM",
}
_SSH_KEY = re.compile(
    r"^(ssh-rsa|ssh-ed25519|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$"
)
_COMPUTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


def vm_id(ctx: Context, rg: str, name: str) -> str:
    return provider_id(ctx, rg, NAMESPACE, "virtualMachines", name)


def _invalid(message: str, target: str | None = None) -> AzureError:
    return bad_request("InvalidParameter", message, target=target)


# -- validation (everything before anything is created) -------------------------------------------


def _size(props: dict[str, Any]) -> vm_catalog.VmSize:
    name = (props.get("hardwareProfile") or {}).get("vmSize")
    size = vm_catalog.find(name)
    if size is None:
        raise _invalid(
            f"The value {name} provided for the VM size is not valid. The valid sizes in the "
            f"current region are: {', '.join(s.name for s in vm_catalog.CATALOG)}.",
            "vmSize",
        )
    return size


def _image(ctx: Context, props: dict[str, Any]) -> dict[str, Any]:
    ref = (props.get("storageProfile") or {}).get("imageReference") or {}
    if ref.get("id"):
        image = ctx.store.get_resource(ref["id"])
        if image is None or image["type"].lower() != IMAGE_TYPE.lower():
            raise bad_request(
                "InvalidParameter",
                f"The Image '{ref['id']}' cannot be found in '{ctx.subscription_id}' subscription.",
                target="imageReference",
            )
        return {
            "id": image["id"],
            "image": image,
            "hyperVGeneration": image["properties"].get("hyperVGeneration", "V1"),
        }
    found = marketplace.find(
        ref.get("publisher"), ref.get("offer"), ref.get("sku"), ref.get("version")
    )
    if found is None:
        raise marketplace.platform_image_not_found(ref)
    return found


def _linux_keys(os_profile: dict[str, Any], name: str) -> list[str]:
    linux = os_profile.get("linuxConfiguration") or {}
    keys = [
        str(k.get("keyData") or "").strip()
        for k in (linux.get("ssh") or {}).get("publicKeys") or []
    ]
    for key in keys:
        if not _SSH_KEY.match(key):
            raise _invalid(
                "The value of parameter linuxConfiguration.ssh.publicKeys.keyData is invalid.",
                "linuxConfiguration.ssh.publicKeys.keyData",
            )
    if linux.get("disablePasswordAuthentication", False) and not keys:
        raise _invalid(
            "Authentication using either SSH or by user name and password must be enabled in "
            "Linux profile.",
            "linuxConfiguration",
        )
    if not keys and not os_profile.get("adminPassword"):
        raise _invalid(
            f"Required parameter 'adminPassword' is missing (null) for VM {name}.", "adminPassword"
        )
    return keys


def _custom_data(os_profile: dict[str, Any]) -> str | None:
    data = os_profile.get("customData")
    if not data:
        return None
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(
            "Custom data in OSProfile must be in Base64 encoding.", "customData"
        ) from None
    return str(data)


def _security_profile(props: dict[str, Any]) -> dict[str, Any] | None:
    profile = props.get("securityProfile")
    if not profile:
        return None
    kind = profile.get("securityType")
    out = dict(profile)
    if kind:
        canonical = SECURITY_TYPES.get(str(kind).lower())
        if canonical is None:
            raise _invalid(
                f"The value '{kind}' of parameter 'securityType' is not valid.", "securityType"
            )
        out["securityType"] = canonical
        if canonical == "TrustedLaunch":
            out.setdefault("uefiSettings", {"secureBootEnabled": True, "vTpmEnabled": True})
    return out


def _nic_refs(ctx: Context, props: dict[str, Any], rid: str) -> list[dict[str, Any]]:
    refs = (props.get("networkProfile") or {}).get("networkInterfaces") or []
    if not refs:
        raise _invalid(
            "Virtual Machine must have at least one network interface.", "networkProfile"
        )
    out = []
    for i, ref in enumerate(refs):
        nic = ctx.store.get_resource(ref.get("id") or "")
        if nic is None or nic["type"].lower() != NIC_TYPE.lower():
            raise bad_request(
                "NotFound",
                f"Resource {ref.get('id')} not found.",
            )
        owner = (nic["properties"].get("virtualMachine") or {}).get("id")
        if owner and owner.lower() != rid.lower():
            raise bad_request(
                "NicInUse",
                f"Network Interface {nic['id']} is used by existing resource {owner}. In order "
                "to create a new resource, please detach the network interface from the "
                "existing resource.",
            )
        ref_props = ref.get("properties") or {}
        out.append(
            {
                "id": nic["id"],
                "properties": {
                    "primary": bool(ref_props.get("primary", i == 0)),
                    "deleteOption": ref_props.get("deleteOption") or "Detach",
                },
            }
        )
    return out


def _identity(ctx: Context, vm: dict[str, Any], requested: Any, old: dict | None) -> dict | None:
    if not isinstance(requested, dict):
        return (old or {}).get("identity")
    kind = str(requested.get("type") or "None")
    lowered = kind.replace(" ", "").lower()
    old_principal = ((old or {}).get("identity") or {}).get("principalId")
    if lowered == "none":
        if old_principal:
            principals.delete(ctx, old_principal)
        return None
    identity: dict[str, Any] = {"type": kind}
    if "systemassigned" in lowered:
        principal_id = (
            old_principal
            or principals.create_managed_identity(ctx, vm["name"], vm["id"])["objectId"]
        )
        identity.update({"principalId": principal_id, "tenantId": ctx.settings.tenant_id})
    elif old_principal:
        principals.delete(ctx, old_principal)
    if "userassigned" in lowered:
        assigned = {}
        for uid in requested.get("userAssignedIdentities") or {}:
            found = ctx.store.get_resource(uid)
            if found is None:
                raise bad_request(
                    "FailedIdentityOperation",
                    f"Identity operation for resource '{vm['id']}' failed with error 'Failed to "
                    f"perform resource identity operation. Status: 'NotFound'. Response: "
                    f'{{"error":{{"code":"ResourceNotFound","message":"The Resource '
                    f"'{uid}' was not found.\"}}}}'.",
                )
            props = found["properties"]
            assigned[found["id"]] = {
                "principalId": props["principalId"],
                "clientId": props["clientId"],
            }
        identity["userAssignedIdentities"] = assigned
    return identity


# -- bodies ---------------------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def instance_view(ctx: Context, vm: dict[str, Any]) -> dict[str, Any]:
    record = power.get(ctx, vm["id"]) or {}
    now = ctx.clock()
    state = power.state(record, now) if record else "deallocated"
    provisioning = vm["properties"]["provisioningState"]
    provisioned_at = record.get("provisioned_at")
    statuses = [
        {
            "code": f"ProvisioningState/{provisioning.lower()}",
            "level": "Info",
            "displayStatus": f"Provisioning {provisioning.lower()}",
            # The last create, start or restart that completed.
            "time": _iso(min(provisioned_at, now))
            if provisioned_at
            else vm["properties"]["timeCreated"],
        }
    ]
    if record.get("generalized"):
        statuses.append(
            {"code": "OSState/generalized", "level": "Info", "displayStatus": "VM generalized"}
        )
    statuses.append(
        {"code": f"PowerState/{state}", "level": "Info", "displayStatus": f"VM {state}"}
    )
    image = vm.get("_image") or {}
    view: dict[str, Any] = {
        "computerName": vm["properties"].get("osProfile", {}).get("computerName"),
        "osName": image.get("osName", "ubuntu"),
        "osVersion": image.get("osVersion", "22.04"),
        "hyperVGeneration": image.get("hyperVGeneration", "V1"),
        "vmAgent": {
            "vmAgentVersion": "2.11.1.12",
            "statuses": [
                {
                    "code": "ProvisioningState/succeeded",
                    "level": "Info",
                    "displayStatus": "Ready",
                    "message": "Guest Agent is running",
                }
            ]
            if state == "running"
            else [],
        },
        "disks": [
            {
                "name": vm["properties"]["storageProfile"]["osDisk"]["name"],
                "statuses": [
                    {
                        "code": "ProvisioningState/succeeded",
                        "level": "Info",
                        "displayStatus": "Provisioning succeeded",
                    }
                ],
            }
        ],
        "statuses": statuses,
    }
    return view


def present(ctx: Context, vm: dict[str, Any], expand: bool = False) -> dict[str, Any]:
    out = {k: v for k, v in vm.items() if not k.startswith("_")}
    if expand:
        out["properties"] = {**out["properties"], "instanceView": instance_view(ctx, vm)}
    return out


# -- operations -----------------------------------------------------------------------------------


@operations.on_complete("compute.vm.provisioned")
def _provisioned(ctx: Context, params: dict[str, Any]) -> None:
    vm = ctx.store.get_resource(params["id"])
    if vm is not None and vm["properties"]["provisioningState"] in ("Creating", "Updating"):
        vm["properties"]["provisioningState"] = "Succeeded"
        ctx.store.put_resource(vm)


@operations.on_complete("compute.vm.power")
def _power_done(ctx: Context, params: dict[str, Any]) -> None:
    return None


@operations.on_complete("compute.vm.delete")
def _complete_delete(ctx: Context, params: dict[str, Any]) -> None:
    vm = ctx.store.get_resource(params["id"])
    if vm is not None:
        delete_vm(ctx, vm)


def delete_vm(ctx: Context, vm: dict[str, Any]) -> None:
    """Delete the VM, then what its ``deleteOption``s say: NICs (and their public IPs), disks."""
    record = power.get(ctx, vm["id"])
    with ctx.store.transaction():
        if record is not None:
            power.deallocate(ctx, record, "vm deleted")
            ctx.store.delete(power.KIND, power.key(vm["id"]))
        principal = (vm.get("identity") or {}).get("principalId")
        if principal:
            principals.delete(ctx, principal)
        delete_tree(ctx, vm["id"])
        for ref in vm["properties"]["networkProfile"]["networkInterfaces"]:
            nics.set_virtual_machine(ctx, ref["id"], None, False)
            if ref["properties"].get("deleteOption") == "Delete":
                nic = ctx.store.get_resource(ref["id"])
                if nic is not None:
                    nics.link(ctx, nic, add=False)
                    delete_tree(ctx, nic["id"])
                    for ipc in nic["properties"]["ipConfigurations"]:
                        pip = ipc["properties"].get("publicIPAddress") or {}
                        if (pip.get("properties") or {}).get("deleteOption") == "Delete":
                            delete_tree(ctx, pip["id"])
        storage = vm["properties"]["storageProfile"]
        for disk in [storage["osDisk"], *storage.get("dataDisks", [])]:
            disk_ref = (disk.get("managedDisk") or {}).get("id")
            if not disk_ref:
                continue
            if disk.get("deleteOption") == "Delete":
                disks.delete(ctx, disk_ref)
            else:
                disks.set_attached(ctx, disk_ref, None)


# -- routes ---------------------------------------------------------------------------------------


def register(router: Router, ctx: Context) -> None:
    def load(rg: str, name: str) -> dict[str, Any]:
        return resource_or_404(ctx, vm_id(ctx, rg, name), VM_TYPE, name, rg)

    def create_vm(
        request: Request, group: dict[str, Any], name: str, body: dict[str, Any], api_version: str
    ) -> Response:
        props = body.get("properties") or {}
        rid = vm_id(ctx, group["name"], name)
        location = check_location(body.get("location"), VM_TYPE)
        size = _size(props)
        image = _image(ctx, props)
        os_profile = dict(props.get("osProfile") or {})
        computer = str(os_profile.get("computerName") or name)
        if not _COMPUTER_NAME.match(computer):
            raise _invalid(
                f"Linux host name cannot exceed 64 characters in length or contain the following characters: {computer}.",
                "computerName",
            )
        admin_user = str(os_profile.get("adminUsername") or "")
        if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", admin_user):
            raise _invalid("The Admin Username specified is not allowed.", "adminUsername")
        keys = _linux_keys(os_profile, name)
        custom_data = _custom_data(os_profile)
        security = _security_profile(props)
        nic_refs = _nic_refs(ctx, props, rid)
        storage = props.get("storageProfile") or {}
        os_disk_in = storage.get("osDisk") or {}
        disk_name = str(os_disk_in.get("name") or f"{name}_OsDisk_1_{uuid.uuid4().hex}")
        managed = os_disk_in.get("managedDisk") or {}
        sku = str(managed.get("storageAccountType") or "Premium_LRS")
        vm: dict[str, Any] = {
            "name": name,
            "id": rid,
            "type": VM_TYPE,
            "location": location,
            "tags": body.get("tags") or {},
            "systemData": system_data(None, request.state.caller),
            "_image": image
            if "id" not in image
            else {"hyperVGeneration": image["hyperVGeneration"]},
            "properties": {
                "vmId": str(uuid.uuid4()),
                "hardwareProfile": {"vmSize": size.name},
                "provisioningState": "Creating",
                "timeCreated": now_iso(),
            },
        }
        if body.get("zones"):
            vm["zones"] = body["zones"]
        if body.get("plan"):
            vm["plan"] = body["plan"]
        props_out = vm["properties"]
        for key in (
            "priority",
            "evictionPolicy",
            "billingProfile",
            "diagnosticsProfile",
            "licenseType",
        ):
            if props.get(key) is not None:
                props_out[key] = props[key]
        if security:
            props_out["securityProfile"] = security
        # Quota before anything is created (Azure answers the PUT with it).
        error = power.quota_error(ctx, vm, size)
        if error is not None:
            raise error
        rg = group["name"]
        image_ref = dict(storage.get("imageReference") or {})
        if "id" not in image:
            image_ref.update({k: image[k] for k in ("publisher", "offer", "sku")})
            image_ref["exactVersion"] = image["version"]
            image_ref.setdefault("version", image["version"])
        linux = dict(os_profile.get("linuxConfiguration") or {})
        linux.setdefault("disablePasswordAuthentication", bool(keys))
        linux.setdefault("provisionVMAgent", True)
        linux.setdefault(
            "patchSettings", {"patchMode": "ImageDefault", "assessmentMode": "ImageDefault"}
        )
        linux.setdefault("enableVMAgentPlatformUpdates", False)
        with ctx.store.transaction():
            identity = _identity(ctx, vm, body.get("identity"), None)
            if identity:
                vm["identity"] = identity
            disk = disks.create(
                ctx,
                rg,
                disk_name,
                location=location,
                size_gb=int(os_disk_in.get("diskSizeGB") or 30),
                sku=sku,
                vm_id=rid,
                os_type="Linux",
                image=image,
            )
            data_disks = []
            for item in storage.get("dataDisks") or []:
                dname = str(
                    item.get("name") or f"{name}_disk{item.get('lun', 0)}_{uuid.uuid4().hex}"
                )
                dsku = str((item.get("managedDisk") or {}).get("storageAccountType") or sku)
                data = disks.create(
                    ctx,
                    rg,
                    dname,
                    location=location,
                    size_gb=int(item.get("diskSizeGB") or 32),
                    sku=dsku,
                    vm_id=rid,
                    os_type=None,
                    image=None,
                )
                data_disks.append(
                    {
                        "lun": int(item.get("lun", 0)),
                        "name": dname,
                        "createOption": item.get("createOption", "Empty"),
                        "caching": item.get("caching", "None"),
                        "managedDisk": {"storageAccountType": dsku, "id": data["id"]},
                        "deleteOption": item.get("deleteOption") or "Detach",
                        "diskSizeGB": data["properties"]["diskSizeGB"],
                        "toBeDetached": False,
                    }
                )
            props_out["storageProfile"] = {
                "imageReference": image_ref,
                "osDisk": {
                    "osType": "Linux",
                    "name": disk_name,
                    "createOption": "FromImage",
                    "caching": os_disk_in.get("caching") or "ReadWrite",
                    "managedDisk": {"storageAccountType": sku, "id": disk["id"]},
                    "deleteOption": os_disk_in.get("deleteOption") or "Detach",
                    "diskSizeGB": disk["properties"]["diskSizeGB"],
                },
                "dataDisks": data_disks,
                "diskControllerType": "SCSI",
            }
            out_profile = {
                "computerName": computer,
                "adminUsername": admin_user,
                "linuxConfiguration": linux,
                "secrets": os_profile.get("secrets") or [],
                "allowExtensionOperations": True,
                "requireGuestProvisionSignal": True,
            }
            props_out["osProfile"] = out_profile
            props_out["networkProfile"] = {"networkInterfaces": nic_refs}
            ctx.store.put_resource(vm)
            for ref in nic_refs:
                nics.set_virtual_machine(ctx, ref["id"], rid, ref["properties"]["primary"])
            source = None
            if "id" in image:
                source = sandbox.disk_dir(ctx, image["image"]["_disk"])
            sandbox.prepare(ctx, disk["id"], admin_user, source)
            record = power.create(
                ctx,
                vm,
                disk_id=disk["id"],
                admin_user=admin_user,
                public_keys=keys,
                custom_data=custom_data,
            )
            provision_s = node_pool.timing(ctx).provision()
            power.allocate(ctx, record, vm, size)
            power.set_target(ctx, record, "running", provision_s)
            power.save(ctx, record)
        op = operations.start(
            ctx,
            namespace=NAMESPACE,
            location=location,
            kind="compute.vm.provisioned",
            params={"id": rid},
            duration=provision_s,
        )
        return json_response(
            present(ctx, vm), 201, headers=operations.headers(ctx, op, api_version)
        )

    def update_vm(
        request: Request, vm: dict[str, Any], body: dict[str, Any], api_version: str
    ) -> Response:
        props = body.get("properties") or {}
        current = vm["properties"]
        os_profile = props.get("osProfile") or {}
        for field in ("computerName", "adminUsername"):
            if os_profile.get(field) and os_profile[field] != current["osProfile"].get(field):
                raise conflict(
                    "PropertyChangeNotAllowed",
                    f"Changing property 'osProfile.{field}' is not allowed.",
                )
        if "hardwareProfile" in props:
            size = _size(props)
            if size.name != current["hardwareProfile"]["vmSize"]:
                record = power.get(ctx, vm["id"])
                if record and record["node_id"]:
                    error = power.quota_error(ctx, vm, size)
                    if error is not None:
                        raise error
                current["hardwareProfile"]["vmSize"] = size.name
        if props.get("securityProfile") is not None:
            current["securityProfile"] = _security_profile(props)
        if body.get("tags") is not None:
            vm["tags"] = body["tags"]
        identity = _identity(ctx, vm, body.get("identity"), vm)
        vm.pop("identity", None)
        if identity:
            vm["identity"] = identity
        vm["systemData"] = system_data(vm, request.state.caller)
        ctx.store.put_resource(vm)
        op = operations.start(
            ctx,
            namespace=NAMESPACE,
            location=vm["location"],
            kind="compute.vm.provisioned",
            params={"id": vm["id"]},
        )
        return json_response(
            present(ctx, vm), 200, headers=operations.headers(ctx, op, api_version)
        )

    async def put_vm(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        body = await json_body(request)
        existing = ctx.store.get_resource(vm_id(ctx, rg, name))
        if existing is not None:
            return update_vm(request, existing, body, api_version)
        return create_vm(request, request.state.parent, name, body, api_version)

    async def patch_vm(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        return update_vm(request, load(rg, name), await json_body(request), api_version)

    async def get_vm(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        expand = (request.query_params.get("$expand") or "").lower() == "instanceview"
        return json_response(present(ctx, load(rg, name), expand))

    async def get_instance_view(request: Request, sub: str, rg: str, name: str) -> Response:
        return json_response(instance_view(ctx, load(rg, name)))

    def readable(request: Request, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        caller = request.state.caller
        expand = (request.query_params.get("$expand") or "").lower() == "instanceview"
        return [
            present(ctx, vm, expand)
            for vm in found
            if is_allowed(ctx, caller.object_id, READ, vm["id"])
        ]

    async def list_group(request: Request, sub: str, rg: str) -> Response:
        found = ctx.store.list_resources(type=VM_TYPE, parent=request.state.parent["id"])
        return json_response(list_page(readable(request, found)))

    async def list_sub(request: Request, sub: str) -> Response:
        return json_response(list_page(readable(request, ctx.store.list_resources(type=VM_TYPE))))

    def power_action(target: str, *, allocate: bool, reboot: bool = False):
        async def action(request: Request, sub: str, rg: str, name: str) -> Response:
            api_version = require_api_version(request)
            vm = load(rg, name)
            record = power.get(ctx, vm["id"])
            if record.get("generalized"):
                raise conflict(
                    "OperationNotAllowed",
                    f"Operation '{target}' is not allowed on VM '{name}' since the VM is "
                    "generalized.",
                )
            timing = node_pool.timing(ctx)
            with ctx.store.transaction():
                if allocate:
                    size = vm_catalog.find(vm["properties"]["hardwareProfile"]["vmSize"])
                    power.allocate(ctx, record, vm, size)
                if target == "deallocated":
                    power.deallocate(ctx, record, "deallocated")
                if reboot:
                    record["boot"] += 1
                seconds = timing.provision() if allocate else power.STOP_S * timing.time_scale
                current = power.state(record, ctx.clock())
                if current != target or reboot:
                    power.set_target(ctx, record, target, seconds)
                else:
                    seconds = 0.0
                power.save(ctx, record)
            return operations.accepted(
                ctx,
                api_version,
                namespace=NAMESPACE,
                location=vm["location"],
                kind="compute.vm.power",
                params={"id": vm["id"]},
                duration=seconds,
            )

        action.__name__ = f"vm_{target}{'_restart' if reboot else ''}"
        return action

    async def generalize(request: Request, sub: str, rg: str, name: str) -> Response:
        vm = load(rg, name)
        record = power.get(ctx, vm["id"])
        if power.state(record, ctx.clock()) not in ("stopped", "deallocated"):
            raise conflict(
                "OperationNotAllowed",
                f"Operation 'generalize' is not allowed on VM '{name}' since the VM is running. "
                "Please stop (deallocate) the VM first.",
            )
        record["generalized"] = True
        power.save(ctx, record)
        return empty(200)

    async def delete_vm_route(request: Request, sub: str, rg: str, name: str) -> Response:
        api_version = require_api_version(request)
        vm = ctx.store.get_resource(vm_id(ctx, rg, name))
        if vm is None:
            return empty(204)
        vm["properties"]["provisioningState"] = "Deleting"
        ctx.store.put_resource(vm)
        return operations.accepted(
            ctx,
            api_version,
            namespace=NAMESPACE,
            location=vm["location"],
            kind="compute.vm.delete",
            params={"id": vm["id"]},
            duration=power.STOP_S * node_pool.timing(ctx).time_scale,
        )

    base = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines"
    one = base + "/{name}"
    scope = "{parent}/providers/" + VM_TYPE + "/{name}"
    in_group = in_resource_group(ctx)

    def vm_route(method: str, path: str, handler, action: str) -> None:
        router.add(method, path, handler, parent=in_group, action=action, scope=scope)

    vm_route("PUT", one, put_vm, WRITE)
    vm_route("PATCH", one, patch_vm, WRITE)
    vm_route("GET", one, get_vm, READ)
    vm_route("DELETE", one, delete_vm_route, DELETE)
    vm_route("GET", one + "/instanceView", get_instance_view, READ)
    vm_route(
        "POST", one + "/start", power_action("running", allocate=True), f"{VM_TYPE}/start/action"
    )
    vm_route(
        "POST",
        one + "/powerOff",
        power_action("stopped", allocate=False),
        f"{VM_TYPE}/powerOff/action",
    )
    vm_route(
        "POST",
        one + "/deallocate",
        power_action("deallocated", allocate=False),
        f"{VM_TYPE}/deallocate/action",
    )
    vm_route(
        "POST",
        one + "/restart",
        power_action("running", allocate=True, reboot=True),
        f"{VM_TYPE}/restart/action",
    )
    vm_route("POST", one + "/generalize", generalize, f"{VM_TYPE}/generalize/action")
    router.add("GET", base, list_group, parent=in_group)
    router.add(
        "GET",
        "/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines",
        list_sub,
        parent=in_subscription(ctx),
    )


def public_ip_of(ctx: Context, vm: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The VM's public address (its primary NIC's primary IP configuration) and that NIC."""
    refs = sorted(
        vm["properties"]["networkProfile"]["networkInterfaces"],
        key=lambda r: not r["properties"].get("primary"),
    )
    for ref in refs:
        nic = ctx.store.get_resource(ref["id"])
        if nic is not None:
            return nics.public_address(ctx, nic), nic
    return None, None
