"""Public IP addresses. The address is allocated when the resource is created, Static or
Dynamic alike (Azure gives a Dynamic address only while its VM runs), from the emulator's
loopback range (``addresses``)."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response

from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.router import Router
from localazure.network import PIP_TYPE, addresses
from localazure.network.common import (
    PutRequest,
    before_delete,
    in_use,
    register_top_level,
)

_SKUS = {"basic": "Basic", "standard": "Standard"}
_METHODS = {"static": "Static", "dynamic": "Dynamic"}


def _sku(value: Any, existing: dict[str, Any] | None) -> dict[str, str]:
    name = (value or {}).get("name") if isinstance(value, dict) else None
    if not name:
        return (existing or {}).get("sku") or {"name": "Standard", "tier": "Regional"}
    canonical = _SKUS.get(str(name).lower())
    if canonical is None:
        raise bad_request(
            "InvalidPublicIpSku", f"Public IP SKU '{name}' is not valid; use Basic or Standard."
        )
    return {"name": canonical, "tier": str((value or {}).get("tier") or "Regional")}


def set_ip_configuration(ctx: Context, pip_id: str, ipconfig_id: str | None) -> None:
    pip = ctx.store.get_resource(pip_id)
    if pip is None:
        return
    if ipconfig_id:
        pip["properties"]["ipConfiguration"] = {"id": ipconfig_id}
    else:
        pip["properties"].pop("ipConfiguration", None)
    ctx.store.put_resource(pip)


@before_delete(PIP_TYPE)
def _before_delete(ctx: Context, pip: dict[str, Any]) -> None:
    user = (pip["properties"].get("ipConfiguration") or {}).get("id")
    if user:
        raise in_use("PublicIPAddressCannotBeDeleted", pip["id"], user)
    if not pip.get("_dry_run"):
        addresses.release_public(ctx, pip["id"])


def register(router: Router, ctx: Context) -> None:
    async def put_pip(put: PutRequest) -> Response:
        props, existing, name, location = put.props, put.existing, put.name, put.location
        sku = _sku(put.body.get("sku"), existing)
        method = _METHODS.get(str(props.get("publicIPAllocationMethod") or "Dynamic").lower())
        if method is None:
            raise bad_request(
                "InvalidRequestFormat",
                f"publicIPAllocationMethod '{props.get('publicIPAllocationMethod')}' is not valid.",
            )
        if sku["name"] == "Standard" and method == "Dynamic":
            if props.get("publicIPAllocationMethod"):
                raise bad_request(
                    "StandardSkuPublicIPAddressesMustBeStatic",
                    "Standard sku publicIp /subscriptions/.../publicIPAddresses/"
                    f"{name} must have AllocationMethod set to Static.",
                )
            method = "Static"
        rid, old = put.id, put.old_props
        properties: dict[str, Any] = {
            "provisioningState": "Succeeded",
            "resourceGuid": old.get("resourceGuid") or str(uuid.uuid4()),
            "ipAddress": addresses.allocate_public(ctx, rid),
            "publicIPAddressVersion": str(props.get("publicIPAddressVersion") or "IPv4"),
            "publicIPAllocationMethod": method,
            "idleTimeoutInMinutes": int(props.get("idleTimeoutInMinutes") or 4),
            "ipTags": props.get("ipTags") or [],
        }
        dns = props.get("dnsSettings") or {}
        if dns.get("domainNameLabel"):
            label = str(dns["domainNameLabel"]).lower()
            properties["dnsSettings"] = {
                "domainNameLabel": label,
                "fqdn": f"{label}.{location}.cloudapp.azure.com",
            }
        if old.get("ipConfiguration"):
            properties["ipConfiguration"] = old["ipConfiguration"]
        pip = {**put.common(PIP_TYPE), "sku": sku, "properties": properties}
        if put.body.get("zones"):
            pip["zones"] = put.body["zones"]
        ctx.store.put_resource(pip)
        return put.answer(ctx, pip)

    register_top_level(router, ctx, collection="publicIPAddresses", type_name=PIP_TYPE, put=put_pip)
