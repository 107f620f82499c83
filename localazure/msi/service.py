"""Microsoft.ManagedIdentity as an emulated service: user-assigned identities (see
``identities``), whose principals go with them when they or their resource group are deleted."""

from __future__ import annotations

from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.msi import identities


class ManagedIdentityService(BaseService):
    name = "msi"

    def register(self, routes: Routes, ctx: Context) -> None:
        identities.register(routes.arm, ctx)

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        identities.drop_principals_under(ctx, resource_id)
