"""Microsoft.Network as an emulated service: virtual networks (with subnets), network security
groups (with rules), public IP addresses and network interfaces on ARM."""

from __future__ import annotations

from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.network import addresses, nics, nsgs, public_ips, vnets


class NetworkService(BaseService):
    name = "network"

    def register(self, routes: Routes, ctx: Context) -> None:
        for module in (vnets, nsgs, public_ips, nics):
            module.register(routes.arm, ctx)

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        addresses.release_public(ctx, resource_id)
