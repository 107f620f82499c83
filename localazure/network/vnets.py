"""Virtual networks and their subnets. Subnets live inside their network's body (Azure returns
them there) and have routes of their own (``.../virtualNetworks/{vnet}/subnets/{name}``)."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import (
    in_resource_group,
    resource_or_404,
)
from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.network import NSG_TYPE, SUBNET_TYPE, VNET_TYPE
from localazure.network.common import (
    PutRequest,
    before_delete,
    delete_answer,
    find_child,
    in_use,
    network_id,
    new_etag,
    put_answer,
    referenced,
    register_top_level,
)

SUBNET_KEEP = ("ipConfigurations",)


def _prefixes(value: Any, what: str) -> list[str]:
    prefixes = [str(p) for p in (value or [])]
    for prefix in prefixes:
        try:
            ipaddress.IPv4Network(prefix, strict=False)
        except ValueError:
            raise bad_request(
                "InvalidAddressPrefixFormat",
                f"Address prefix {prefix} of {what} has an invalid format.",
            ) from None
    return prefixes


def _subnet(
    ctx: Context, vnet: dict[str, Any], name: str, props: dict[str, Any], old: dict | None
) -> dict[str, Any]:
    subnet_id = f"{vnet['id']}/subnets/{name}"
    requested = props.get("addressPrefixes") or (
        [props["addressPrefix"]] if props.get("addressPrefix") else []
    )
    prefixes = _prefixes(requested, f"subnet {name}")
    if not prefixes:
        raise bad_request("InvalidRequestFormat", f"Subnet {name} must have an addressPrefix.")
    space = [
        ipaddress.IPv4Network(p, strict=False)
        for p in vnet["properties"]["addressSpace"]["addressPrefixes"]
    ]
    for prefix in prefixes:
        net = ipaddress.IPv4Network(prefix, strict=False)
        if not any(net.subnet_of(outer) for outer in space):
            raise bad_request(
                "NetcfgInvalidSubnet",
                f"Subnet '{name}' is not valid in virtual network '{vnet['name']}'.",
            )
    nsg = referenced(ctx, props.get("networkSecurityGroup"), NSG_TYPE, f"subnet {subnet_id}")
    properties: dict[str, Any] = {
        "provisioningState": "Succeeded",
        "privateEndpointNetworkPolicies": props.get("privateEndpointNetworkPolicies", "Disabled"),
        "privateLinkServiceNetworkPolicies": props.get(
            "privateLinkServiceNetworkPolicies", "Enabled"
        ),
        "delegations": props.get("delegations") or [],
        "serviceEndpoints": props.get("serviceEndpoints") or [],
    }
    if len(prefixes) == 1 and not props.get("addressPrefixes"):
        properties["addressPrefix"] = prefixes[0]
    else:
        properties["addressPrefixes"] = prefixes
    if nsg:
        properties["networkSecurityGroup"] = {"id": nsg["id"]}
    for key in SUBNET_KEEP:
        if old and old["properties"].get(key):
            properties[key] = old["properties"][key]
    return {
        "name": name,
        "id": subnet_id,
        "etag": new_etag(),
        "type": SUBNET_TYPE,
        "properties": properties,
    }


def subnet_prefix(subnet: dict[str, Any]) -> str:
    props = subnet["properties"]
    return props.get("addressPrefix") or props["addressPrefixes"][0]


def find_subnet(ctx: Context, subnet_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    vnet_id, _, name = subnet_id.rstrip("/").rpartition("/subnets/")
    vnet = ctx.store.get_resource(vnet_id)
    if vnet is None:
        return None
    for subnet in vnet["properties"]["subnets"]:
        if subnet["name"].lower() == name.lower():
            return vnet, subnet
    return None


def attach_ip_configuration(ctx: Context, subnet_id: str, ipconfig_id: str, add: bool) -> None:
    found = find_subnet(ctx, subnet_id)
    if found is None:
        return
    vnet, subnet = found
    refs = [r for r in subnet["properties"].get("ipConfigurations", []) if r["id"] != ipconfig_id]
    if add:
        refs.append({"id": ipconfig_id})
    if refs:
        subnet["properties"]["ipConfigurations"] = refs
    else:
        subnet["properties"].pop("ipConfigurations", None)
    ctx.store.put_resource(vnet)


def _check_subnet_free(subnet: dict[str, Any]) -> None:
    configs = subnet["properties"].get("ipConfigurations")
    if configs:
        raise in_use("InUseSubnetCannotBeDeleted", subnet["id"], configs[0]["id"])


@before_delete(VNET_TYPE)
def _before_vnet_delete(ctx: Context, vnet: dict[str, Any]) -> None:
    for subnet in vnet["properties"]["subnets"]:
        _check_subnet_free(subnet)


def register(router: Router, ctx: Context) -> None:
    async def put_vnet(put: PutRequest) -> Response:
        props, existing, name = put.props, put.existing, put.name
        prefixes = _prefixes((props.get("addressSpace") or {}).get("addressPrefixes"), name)
        if not prefixes:
            raise bad_request(
                "InvalidRequestFormat",
                f"Virtual network {name} must have at least one address prefix in addressSpace.",
            )
        vnet: dict[str, Any] = {
            **put.common(VNET_TYPE),
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": (existing or {}).get("properties", {}).get("resourceGuid")
                or str(uuid.uuid4()),
                "addressSpace": {"addressPrefixes": prefixes},
                "dhcpOptions": props.get("dhcpOptions") or {"dnsServers": []},
                "subnets": [],
                "virtualNetworkPeerings": [],
                "enableDdosProtection": bool(props.get("enableDdosProtection", False)),
            },
        }
        old_subnets = {
            s["name"].lower(): s for s in (existing or {}).get("properties", {}).get("subnets", [])
        }
        requested = props.get("subnets")
        if requested is None:
            # A PUT without 'subnets' keeps them (as azcollection's vnet module relies on).
            vnet["properties"]["subnets"] = list(old_subnets.values())
        else:
            for item in requested:
                sname = str(item.get("name") or "")
                vnet["properties"]["subnets"].append(
                    _subnet(
                        ctx,
                        vnet,
                        sname,
                        item.get("properties") or {},
                        old_subnets.get(sname.lower()),
                    )
                )
            kept = {s["name"].lower() for s in vnet["properties"]["subnets"]}
            for sname, old in old_subnets.items():
                if sname not in kept:
                    _check_subnet_free(old)
        ctx.store.put_resource(vnet)
        return put.answer(ctx, vnet)

    register_top_level(router, ctx, collection="virtualNetworks", type_name=VNET_TYPE, put=put_vnet)

    def load_vnet(rg: str, vnet: str) -> dict[str, Any]:
        return resource_or_404(
            ctx, network_id(ctx, rg, "virtualNetworks", vnet), VNET_TYPE, vnet, rg
        )

    async def put_subnet(request: Request, sub: str, rg: str, vnet: str, name: str) -> Response:
        api_version = require_api_version(request)
        network = load_vnet(rg, vnet)
        body = await json_body(request)
        subnets = network["properties"]["subnets"]
        old = next((s for s in subnets if s["name"].lower() == name.lower()), None)
        subnet = _subnet(ctx, network, name, body.get("properties") or {}, old)
        network["properties"]["subnets"] = [
            s for s in subnets if s["name"].lower() != name.lower()
        ] + [subnet]
        ctx.store.put_resource(network)
        return put_answer(ctx, api_version, subnet, old is None)

    async def get_subnet(request: Request, sub: str, rg: str, vnet: str, name: str) -> Response:
        require_api_version(request)
        network = load_vnet(rg, vnet)
        return json_response(find_child(network["properties"]["subnets"], "subnets", name, network))

    async def list_subnets(request: Request, sub: str, rg: str, vnet: str) -> Response:
        return json_response(list_page(load_vnet(rg, vnet)["properties"]["subnets"]))

    async def delete_subnet(request: Request, sub: str, rg: str, vnet: str, name: str) -> Response:
        api_version = require_api_version(request)
        network = load_vnet(rg, vnet)
        remaining = []
        for subnet in network["properties"]["subnets"]:
            if subnet["name"].lower() == name.lower():
                _check_subnet_free(subnet)
            else:
                remaining.append(subnet)
        if len(remaining) == len(network["properties"]["subnets"]):
            return delete_answer(ctx, api_version, None)
        network["properties"]["subnets"] = remaining
        ctx.store.put_resource(network)
        return empty(200)

    base = (
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network"
        "/virtualNetworks/{vnet}/subnets"
    )
    scope = "{parent}/providers/" + VNET_TYPE + "/{vnet}"
    in_group = in_resource_group(ctx)
    router.add(
        "GET", base, list_subnets, parent=in_group, action=f"{SUBNET_TYPE}/read", scope=scope
    )
    router.add(
        "PUT",
        base + "/{name}",
        put_subnet,
        parent=in_group,
        action=f"{SUBNET_TYPE}/write",
        scope=scope,
    )
    router.add(
        "GET",
        base + "/{name}",
        get_subnet,
        parent=in_group,
        action=f"{SUBNET_TYPE}/read",
        scope=scope,
    )
    router.add(
        "DELETE",
        base + "/{name}",
        delete_subnet,
        parent=in_group,
        action=f"{SUBNET_TYPE}/delete",
        scope=scope,
    )
