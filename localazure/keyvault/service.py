"""Azure Key Vault as an emulated service: vaults on ARM, the secrets data plane on
``*.vault.azure.net``, and soft delete of the vaults under a deleted resource (group)."""

from __future__ import annotations

from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.keyvault import VAULT_SUFFIX, dataplane, vaults


class KeyVaultService(BaseService):
    name = "keyvault"

    def register(self, routes: Routes, ctx: Context) -> None:
        vaults.register(routes.arm, ctx)
        dataplane.register(routes.host(VAULT_SUFFIX), ctx)

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        vaults.soft_delete_vaults(ctx, resource_id)
