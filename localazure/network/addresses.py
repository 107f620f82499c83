"""Addresses the emulator hands out.

Public IP addresses come from a /16 of 127.0.0.0/8, never from a routable range: a VM's SSH
server listens on its public IP, so the address must be one this host answers on, and nothing
may ever connect to an address outside 127.0.0.0/8. The /16 is ``127.<10 + port % 240>.0.0/16``
(the emulator's port: 44300 gives ``127.150.0.0/16``), so that emulators running side by side
(tests, molecule, ``make run``) hand out different addresses; ``LOCALAZURE_PUBLIC_IP_PREFIX``
sets it. An address another process already listens on is skipped. Private addresses of
NICs come from their subnet's prefix, as Azure allocates them (the first four addresses of a
subnet are reserved); they are data only.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from localazure.core.context import Context
from localazure.core.errors import bad_request

PUBLIC_PREFIX_ENV = "LOCALAZURE_PUBLIC_IP_PREFIX"
PORT_ENV = "LOCALAZURE_VM_SSH_PORT"
UNPRIVILEGED_SSH_PORT = 2222
_KIND = "network-public-ip"


def ssh_port() -> int:
    """The port emulated VMs' SSH servers listen on, at their public addresses: 22 when this
    process may bind it (root, or ``net.ipv4.ip_unprivileged_port_start`` at most 22), else
    2222; ``LOCALAZURE_VM_SSH_PORT`` sets it."""
    if os.environ.get(PORT_ENV):
        return int(os.environ[PORT_ENV])
    if os.geteuid() == 0:
        return 22
    try:
        start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        start = 1024
    return 22 if start <= 22 else UNPRIVILEGED_SSH_PORT


def public_prefix(port: int) -> ipaddress.IPv4Network:
    default = f"127.{10 + port % 240}.0.0/16"
    network = ipaddress.IPv4Network(os.environ.get(PUBLIC_PREFIX_ENV, default))
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
    for host in public_prefix(ctx.settings.port).hosts():
        address = str(host)
        if address in used or address.endswith((".0", ".1", ".2", ".3")):
            continue
        if _listened_on(address):
            continue
        ctx.store.put(_KIND, address, {"address": address, "owner": owner})
        return address
    raise bad_request(
        "PublicIPCountLimitReached",
        f"Cannot create more than {len(used)} public IP addresses for this subscription in this "
        "region.",
    )


def _listened_on(address: str) -> bool:
    """True when some process (another emulator's VM) listens on the address already."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((address, ssh_port())) == 0


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
