"""Network security groups: the user's rules, Azure's default rules, and the security-rule child
routes. Which NICs and subnets use a group is recorded on it, as Azure shows."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import in_resource_group, resource_or_404
from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.network import NSG_TYPE, RULE_TYPE
from localazure.network.common import (
    PutRequest,
    before_delete,
    find_child,
    in_use,
    network_id,
    new_etag,
    put_answer,
    register_top_level,
)

_DIRECTIONS = {"inbound": "Inbound", "outbound": "Outbound"}
_ACCESS = {"allow": "Allow", "deny": "Deny"}
_PROTOCOLS = {"tcp": "Tcp", "udp": "Udp", "icmp": "Icmp", "*": "*", "esp": "Esp", "ah": "Ah"}
_DEFAULT_RULES = (
    (
        "AllowVnetInBound",
        "Inbound",
        65000,
        "VirtualNetwork",
        "VirtualNetwork",
        "Allow",
        "Allow inbound traffic from all VMs in VNET",
    ),
    (
        "AllowAzureLoadBalancerInBound",
        "Inbound",
        65001,
        "AzureLoadBalancer",
        "*",
        "Allow",
        "Allow inbound traffic from azure load balancer",
    ),
    ("DenyAllInBound", "Inbound", 65500, "*", "*", "Deny", "Deny all inbound traffic"),
    (
        "AllowVnetOutBound",
        "Outbound",
        65000,
        "VirtualNetwork",
        "VirtualNetwork",
        "Allow",
        "Allow outbound traffic from all VMs to all VMs in VNET",
    ),
    (
        "AllowInternetOutBound",
        "Outbound",
        65001,
        "*",
        "Internet",
        "Allow",
        "Allow outbound traffic from all VMs to Internet",
    ),
    ("DenyAllOutBound", "Outbound", 65500, "*", "*", "Deny", "Deny all outbound traffic"),
)


def _default_rules(nsg_id: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "id": f"{nsg_id}/defaultSecurityRules/{name}",
            "etag": new_etag(),
            "type": f"{NSG_TYPE}/defaultSecurityRules",
            "properties": {
                "provisioningState": "Succeeded",
                "description": description,
                "protocol": "*",
                "sourcePortRange": "*",
                "destinationPortRange": "*",
                "sourceAddressPrefix": source,
                "destinationAddressPrefix": destination,
                "access": access,
                "priority": priority,
                "direction": direction,
                "sourcePortRanges": [],
                "destinationPortRanges": [],
                "sourceAddressPrefixes": [],
                "destinationAddressPrefixes": [],
            },
        }
        for name, direction, priority, source, destination, access, description in _DEFAULT_RULES
    ]


def _choice(value: Any, allowed: dict[str, str], field: str, rule: str) -> str:
    canonical = allowed.get(str(value or "").lower())
    if canonical is None:
        raise bad_request(
            "SecurityRuleInvalidParameter" if value else "SecurityRuleParameterMissing",
            f"Security rule {rule} has invalid value '{value}' for property {field}. Allowed "
            f"values are {', '.join(allowed.values())}.",
        )
    return canonical


def _rule(nsg_id: str, name: str, props: dict[str, Any]) -> dict[str, Any]:
    priority = props.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 100 <= priority <= 4096:
        raise bad_request(
            "SecurityRuleInvalidPriority",
            f"Security rule {name} has invalid Priority {priority}. Value provided: {priority}. "
            "Allowed range 100-4096.",
        )
    properties: dict[str, Any] = {
        "provisioningState": "Succeeded",
        "protocol": _choice(props.get("protocol"), _PROTOCOLS, "protocol", name),
        "access": _choice(props.get("access"), _ACCESS, "access", name),
        "direction": _choice(props.get("direction"), _DIRECTIONS, "direction", name),
        "priority": priority,
    }
    for single, plural in (
        ("sourcePortRange", "sourcePortRanges"),
        ("destinationPortRange", "destinationPortRanges"),
        ("sourceAddressPrefix", "sourceAddressPrefixes"),
        ("destinationAddressPrefix", "destinationAddressPrefixes"),
    ):
        many = [str(v) for v in props.get(plural) or []]
        if props.get(single) is not None:
            properties[single] = str(props[single])
        elif not many:
            raise bad_request(
                "SecurityRuleParameterMissing",
                f"Security rule {name} must have {single} or {plural}.",
            )
        properties[plural] = many
    if props.get("description") is not None:
        properties["description"] = str(props["description"])
    for key in ("sourceApplicationSecurityGroups", "destinationApplicationSecurityGroups"):
        if props.get(key):
            properties[key] = props[key]
    return {
        "name": name,
        "id": f"{nsg_id}/securityRules/{name}",
        "etag": new_etag(),
        "type": RULE_TYPE,
        "properties": properties,
    }


def _check_rules(rules: list[dict[str, Any]]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for rule in rules:
        key = (rule["properties"]["direction"], rule["properties"]["priority"])
        if key in seen:
            raise bad_request(
                "SecurityRuleConflict",
                f"Security rule {rule['name']} conflicts with rule {seen[key]}. Rules cannot have "
                "the same Priority and Direction.",
            )
        seen[key] = rule["name"]


def set_user(ctx: Context, nsg_id: str, key: str, user_id: str, add: bool) -> None:
    """Record (or forget) that a NIC (``key="networkInterfaces"``) or subnet uses the group."""
    nsg = ctx.store.get_resource(nsg_id)
    if nsg is None:
        return
    refs = [r for r in nsg["properties"].get(key, []) if r["id"].lower() != user_id.lower()]
    if add:
        refs.append({"id": user_id})
    nsg["properties"][key] = refs
    ctx.store.put_resource(nsg)


@before_delete(NSG_TYPE)
def _before_nsg_delete(ctx: Context, nsg: dict[str, Any]) -> None:
    for key in ("networkInterfaces", "subnets"):
        users = nsg["properties"].get(key) or []
        if users:
            raise in_use("InUseNetworkSecurityGroupCannotBeDeleted", nsg["id"], users[0]["id"])


def register(router: Router, ctx: Context) -> None:
    async def put_nsg(put: PutRequest) -> Response:
        rid, props = put.id, put.props
        rules = [
            _rule(rid, str(item.get("name") or ""), item.get("properties") or {})
            for item in props.get("securityRules") or []
        ]
        _check_rules(rules)
        old = put.old_props
        nsg = {
            **put.common(NSG_TYPE),
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": old.get("resourceGuid") or str(uuid.uuid4()),
                "securityRules": rules,
                "defaultSecurityRules": _default_rules(rid),
                "networkInterfaces": old.get("networkInterfaces", []),
                "subnets": old.get("subnets", []),
            },
        }
        ctx.store.put_resource(nsg)
        return put.answer(ctx, nsg)

    register_top_level(
        router, ctx, collection="networkSecurityGroups", type_name=NSG_TYPE, put=put_nsg
    )

    def load(rg: str, nsg: str) -> dict[str, Any]:
        return resource_or_404(
            ctx, network_id(ctx, rg, "networkSecurityGroups", nsg), NSG_TYPE, nsg, rg
        )

    async def put_rule(request: Request, sub: str, rg: str, nsg: str, name: str) -> Response:
        api_version = require_api_version(request)
        group = load(rg, nsg)
        rule = _rule(group["id"], name, (await json_body(request)).get("properties") or {})
        rules = group["properties"]["securityRules"]
        created = not any(r["name"].lower() == name.lower() for r in rules)
        rules = [r for r in rules if r["name"].lower() != name.lower()] + [rule]
        _check_rules(rules)
        group["properties"]["securityRules"] = rules
        ctx.store.put_resource(group)
        return put_answer(ctx, api_version, rule, created)

    async def get_rule(request: Request, sub: str, rg: str, nsg: str, name: str) -> Response:
        group = load(rg, nsg)
        return json_response(
            find_child(group["properties"]["securityRules"], "securityRules", name, group)
        )

    async def list_rules(request: Request, sub: str, rg: str, nsg: str) -> Response:
        return json_response(list_page(load(rg, nsg)["properties"]["securityRules"]))

    async def delete_rule(request: Request, sub: str, rg: str, nsg: str, name: str) -> Response:
        group = load(rg, nsg)
        rules = group["properties"]["securityRules"]
        group["properties"]["securityRules"] = [
            r for r in rules if r["name"].lower() != name.lower()
        ]
        ctx.store.put_resource(group)
        removed = len(rules) != len(group["properties"]["securityRules"])
        return empty(200 if removed else 204)

    base = (
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network"
        "/networkSecurityGroups/{nsg}/securityRules"
    )
    scope = "{parent}/providers/" + NSG_TYPE + "/{nsg}"
    in_group = in_resource_group(ctx)
    for method, path, handler, verb in (
        ("GET", base, list_rules, "read"),
        ("PUT", base + "/{name}", put_rule, "write"),
        ("GET", base + "/{name}", get_rule, "read"),
        ("DELETE", base + "/{name}", delete_rule, "delete"),
    ):
        router.add(
            method, path, handler, parent=in_group, action=f"{RULE_TYPE}/{verb}", scope=scope
        )
