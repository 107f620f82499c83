"""Network interfaces: IP configurations with a private address from their subnet (data only:
nothing ever connects to it) and an optional public IP, an optional NSG, and the VM using it."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response

from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.router import Router
from localazure.network import NIC_TYPE, NSG_TYPE, PIP_TYPE, addresses, nsgs, public_ips, vnets
from localazure.network.common import (
    PutRequest,
    before_delete,
    in_use,
    new_etag,
    ref_id,
    referenced,
    register_top_level,
)


def _used_private(ctx: Context, subnet: dict[str, Any], own_nic: str) -> set[str]:
    used = set()
    for nic in ctx.store.list_resources(type=NIC_TYPE):
        if nic["id"].lower() == own_nic.lower():
            continue
        for ipc in nic["properties"]["ipConfigurations"]:
            if (ref_id(ipc["properties"].get("subnet")) or "").lower() == subnet["id"].lower():
                used.add(ipc["properties"]["privateIPAddress"])
    return used


def _mac(nic_id: str) -> str:
    digest = uuid.uuid5(uuid.NAMESPACE_URL, nic_id.lower()).hex[:10].upper()
    return "00-0D-" + "-".join(digest[i : i + 2] for i in range(0, 8, 2))


def _ip_configuration(
    ctx: Context, nic_id: str, item: dict[str, Any], index: int, old: dict[str, Any] | None
) -> dict[str, Any]:
    name = str(item.get("name") or f"ipconfig{index + 1}")
    props = item.get("properties") or {}
    ipc_id = f"{nic_id}/ipConfigurations/{name}"
    subnet_id = ref_id(props.get("subnet"))
    found = vnets.find_subnet(ctx, subnet_id) if subnet_id else None
    if found is None:
        raise bad_request(
            "InvalidResourceReference",
            f"Resource {subnet_id} referenced by resource {ipc_id} was not found. Please make "
            "sure that the referenced resource exists, and that both resources are in the same "
            "region.",
        )
    _, subnet = found
    method = (
        "Static"
        if str(props.get("privateIPAllocationMethod", "")).lower() == "static"
        else "Dynamic"
    )
    old_props = (old or {}).get("properties", {})
    if method == "Static" and props.get("privateIPAddress"):
        private = str(props["privateIPAddress"])
    elif (
        old_props.get("privateIPAddress")
        and (ref_id(old_props.get("subnet")) or "").lower() == subnet["id"].lower()
    ):
        private = old_props["privateIPAddress"]
    else:
        private = addresses.allocate_private(
            vnets.subnet_prefix(subnet), _used_private(ctx, subnet, nic_id)
        )
    pip = referenced(ctx, props.get("publicIPAddress"), PIP_TYPE, ipc_id)
    if pip:
        user = (pip["properties"].get("ipConfiguration") or {}).get("id")
        if user and user.lower() != ipc_id.lower():
            raise bad_request(
                "PublicIPAddressInUse",
                f"Resource {pip['id']} is referenced by resource {user}, so it cannot be used "
                f"by {ipc_id}.",
            )
    properties: dict[str, Any] = {
        "provisioningState": "Succeeded",
        "privateIPAddress": private,
        "privateIPAllocationMethod": method,
        "privateIPAddressVersion": "IPv4",
        "subnet": {"id": subnet["id"]},
        "primary": bool(props.get("primary", index == 0)),
    }
    if pip:
        properties["publicIPAddress"] = {"id": pip["id"]}
        delete_option = (
            (props.get("publicIPAddress") or {}).get("properties", {}).get("deleteOption")
        )
        if delete_option:
            properties["publicIPAddress"]["properties"] = {"deleteOption": delete_option}
    return {
        "name": name,
        "id": ipc_id,
        "etag": new_etag(),
        "type": f"{NIC_TYPE}/ipConfigurations",
        "properties": properties,
    }


def _links(nic: dict[str, Any]) -> tuple[str | None, dict[str, str], dict[str, str]]:
    """(nsg id, {ipconfig id: subnet id}, {ipconfig id: public ip id}) of a NIC."""
    subnets, pips = {}, {}
    for ipc in nic["properties"]["ipConfigurations"]:
        subnets[ipc["id"]] = ref_id(ipc["properties"].get("subnet"))
        pip = ref_id(ipc["properties"].get("publicIPAddress"))
        if pip:
            pips[ipc["id"]] = pip
    return ref_id(nic["properties"].get("networkSecurityGroup")), subnets, pips


def link(ctx: Context, nic: dict[str, Any] | None, add: bool) -> None:
    """Record the NIC on what it uses (its NSG, subnets, public IPs), or forget it."""
    if nic is None:
        return
    nsg, subnets, pips = _links(nic)
    if nsg:
        nsgs.set_user(ctx, nsg, "networkInterfaces", nic["id"], add)
    for ipc_id, subnet_id in subnets.items():
        if subnet_id:
            vnets.attach_ip_configuration(ctx, subnet_id, ipc_id, add)
    for ipc_id, pip_id in pips.items():
        public_ips.set_ip_configuration(ctx, pip_id, ipc_id if add else None)


def set_virtual_machine(ctx: Context, nic_id: str, vm_id: str | None, primary: bool) -> None:
    nic = ctx.store.get_resource(nic_id)
    if nic is None:
        return
    if vm_id:
        nic["properties"]["virtualMachine"] = {"id": vm_id}
        nic["properties"]["primary"] = primary
    else:
        nic["properties"].pop("virtualMachine", None)
        nic["properties"].pop("primary", None)
    ctx.store.put_resource(nic)


def public_address(ctx: Context, nic: dict[str, Any]) -> str | None:
    """The public IP address of the NIC's primary IP configuration."""
    configs = sorted(
        nic["properties"]["ipConfigurations"], key=lambda c: not c["properties"].get("primary")
    )
    for ipc in configs:
        pip_id = ref_id(ipc["properties"].get("publicIPAddress"))
        pip = ctx.store.get_resource(pip_id) if pip_id else None
        if pip and pip["properties"].get("ipAddress"):
            return pip["properties"]["ipAddress"]
    return None


@before_delete(NIC_TYPE)
def _before_delete(ctx: Context, nic: dict[str, Any]) -> None:
    vm = (nic["properties"].get("virtualMachine") or {}).get("id")
    if vm:
        raise in_use("NicInUse", nic["id"], vm)
    if not nic.get("_dry_run"):
        link(ctx, nic, add=False)


def register(router: Router, ctx: Context) -> None:
    async def put_nic(put: PutRequest) -> Response:
        rid, props = put.id, put.props
        requested = props.get("ipConfigurations") or []
        if not requested:
            raise bad_request(
                "NetworkInterfaceMustHaveAtLeastOneIpConfiguration",
                f"Network interface {rid} must have at least one IP configuration.",
            )
        old_props = put.old_props
        old_configs = {c["name"].lower(): c for c in old_props.get("ipConfigurations", [])}
        configs = [
            _ip_configuration(ctx, rid, item, i, old_configs.get(str(item.get("name", "")).lower()))
            for i, item in enumerate(requested)
        ]
        nsg = referenced(ctx, props.get("networkSecurityGroup"), NSG_TYPE, rid)
        properties: dict[str, Any] = {
            "provisioningState": "Succeeded",
            "resourceGuid": old_props.get("resourceGuid") or str(uuid.uuid4()),
            "ipConfigurations": configs,
            "dnsSettings": {
                "dnsServers": (props.get("dnsSettings") or {}).get("dnsServers") or [],
                "appliedDnsServers": [],
                "internalDomainNameSuffix": f"{uuid.uuid5(uuid.NAMESPACE_URL, rid).hex[:24]}"
                ".bx.internal.cloudapp.net",
            },
            "macAddress": _mac(rid),
            "enableAcceleratedNetworking": bool(props.get("enableAcceleratedNetworking", False)),
            "enableIPForwarding": bool(props.get("enableIPForwarding", False)),
            "disableTcpStateTracking": False,
            "nicType": "Standard",
            "vnetEncryptionSupported": False,
            "auxiliaryMode": "None",
            "auxiliarySku": "None",
        }
        if nsg:
            properties["networkSecurityGroup"] = {"id": nsg["id"]}
        for key in ("virtualMachine", "primary"):
            if key in old_props:
                properties[key] = old_props[key]
        nic = {**put.common(NIC_TYPE), "kind": "Regular", "properties": properties}
        with ctx.store.transaction():
            link(ctx, put.existing, add=False)
            ctx.store.put_resource(nic)
            link(ctx, nic, add=True)
        return put.answer(ctx, nic)

    register_top_level(router, ctx, collection="networkInterfaces", type_name=NIC_TYPE, put=put_nic)
