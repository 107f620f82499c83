"""Addresses the emulator hands out.

Public IP addresses come from ``127.10.0.0/16`` (``LOCALAZURE_PUBLIC_IP_PREFIX``), never from a
routable range: a VM's SSH server listens on its public IP, so the address must be one this host
answers on, and nothing may ever connect to an address outside 127.0.0.0/8. Private addresses of
NICs come from their subnet's prefix, as Azure allocates them (the first four addresses of a
subnet are reserved); they are data only.
"""

from __future__ import annotations

import ipaddress
import os

from localazure.core.context import Context
from localazure.core.errors import bad_request

PUBLIC_PREFIX_ENV = "LOCALAZURE_PUBLIC_IP_PREFIX"
DEFAULT_PUBLIC_PREFIX = "127.10.0.0/16"
_KIND = "network-public-ip"


def public_prefix() -> ipaddress.IPv4Network:
    network = ipaddress.IPv4Network(os.environ.get(PUBLIC_PREFIX_ENV, DEFAULT_PUBLIC_PREFIX))
    if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        raise ValueError(f"{PUBLIC_PREFIX_ENV} must lie within 127.0.0.0/8, not {network}")
    return network


def allocate_public(ctx: Context, resource_id: str) -> str:
    """A free public address for ``resource_id`` (the same one again if it has one)."""
    owner = resource_id.lower()
    records = ctx.store.values(_KIND)
    for record in records:
        if record["owner"] == owner:
            return record["address"]
    used = {record["address"] for record in records}
    for host in public_prefix().hosts():
        address = str(host)
        if address not in used and not address.endswith((".0", ".1", ".2", ".3")):
            ctx.store.put(_KIND, address, {"address": address, "owner": owner})
            return address
    raise bad_request(
        "PublicIPCountLimitReached",
        f"Cannot create more than {len(used)} public IP addresses for this subscription in this "
        "region.",
    )


def release_public(ctx: Context, resource_id: str) -> None:
    for address, record in ctx.store.items(_KIND):
        if record["owner"] == resource_id.lower() or record["owner"].startswith(
            resource_id.lower() + "/"
        ):
            ctx.store.delete(_KIND, address)


def allocate_private(prefix: str, used: set[str]) -> str:
    try:
        network = ipaddress.IPv4Network(prefix, strict=False)
    except ValueError:
        raise bad_request(
            "InvalidAddressPrefixFormat", f"Address prefix {prefix} has an invalid format."
        ) from None
    for host in list(network.hosts())[3:]:
        if str(host) not in used:
            return str(host)
    raise bad_request(
        "SubnetIsFull", f"Subnet with address prefix {prefix} has no free address left."
    )
