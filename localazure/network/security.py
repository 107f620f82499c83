"""Whether the NSGs in front of a NIC let a connection in, evaluated as Azure does: for inbound
traffic the subnet's group first, then the NIC's; in each, the rules (user and default) by
priority, the first that matches decides. No group at all lets everything in.

Address prefixes: ``*``, ``Internet`` and ``Any`` match every source (the controller reaches the
emulated VMs from 127.0.0.1, which stands for "the internet" here); ``VirtualNetwork`` matches
the network's address space; a CIDR or address matches by containment. Other service tags
(``AzureLoadBalancer``, ...) match nothing the controller connects from.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from localazure.core.context import Context
from localazure.network.common import ref_id
from localazure.network.vnets import find_subnet

_ANY = {"*", "internet", "any"}


def _source_matches(prefix: str, source: str, vnet_space: list[str]) -> bool:
    lowered = prefix.lower()
    if lowered in _ANY:
        return True
    if lowered == "virtualnetwork":
        return any(_contains(p, source) for p in vnet_space)
    return _contains(prefix, source)


def _contains(prefix: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return False


def _port_matches(spec: str, port: int) -> bool:
    if spec == "*":
        return True
    low, _, high = spec.partition("-")
    try:
        return int(low) <= port <= int(high or low)
    except ValueError:
        return False


def _rule_matches(rule: dict[str, Any], source: str, port: int, space: list[str]) -> bool:
    props = rule["properties"]
    if props["direction"] != "Inbound" or props["protocol"] not in ("*", "Tcp"):
        return False
    ports = props.get("destinationPortRanges") or [props.get("destinationPortRange", "")]
    sources = props.get("sourceAddressPrefixes") or [props.get("sourceAddressPrefix", "")]
    return any(_port_matches(p, port) for p in ports) and any(
        _source_matches(s, source, space) for s in sources
    )


def group_allows(nsg: dict[str, Any], source: str, port: int, space: list[str]) -> bool:
    rules = nsg["properties"]["securityRules"] + nsg["properties"]["defaultSecurityRules"]
    for rule in sorted(rules, key=lambda r: r["properties"]["priority"]):
        if _rule_matches(rule, source, port, space):
            return rule["properties"]["access"] == "Allow"
    return False


def inbound_allowed(ctx: Context, nic: dict[str, Any], source: str, port: int) -> bool:
    """May ``source`` open a TCP connection to ``port`` of the VM behind ``nic``?"""
    groups: list[dict[str, Any]] = []
    space: list[str] = []
    for ipc in nic["properties"].get("ipConfigurations", []):
        found = find_subnet(ctx, ref_id(ipc["properties"].get("subnet")) or "")
        if found:
            vnet, subnet = found
            space = vnet["properties"]["addressSpace"]["addressPrefixes"]
            subnet_nsg = ref_id(subnet["properties"].get("networkSecurityGroup"))
            if subnet_nsg and ctx.store.get_resource(subnet_nsg):
                groups.append(ctx.store.get_resource(subnet_nsg))
        break
    nic_nsg = ref_id(nic["properties"].get("networkSecurityGroup"))
    if nic_nsg and ctx.store.get_resource(nic_nsg):
        groups.append(ctx.store.get_resource(nic_nsg))
    return all(group_allows(g, source, port, space) for g in groups)
