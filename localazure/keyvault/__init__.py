"""Azure Key Vault: vaults on ARM (``Microsoft.KeyVault/vaults``, soft delete, deleted vaults,
purge) and the secrets data plane at ``<vault>.vault.azure.net`` with Key Vault's challenge
authentication and its two authorization models (Azure RBAC data actions, access policies)."""

from __future__ import annotations

NAMESPACE = "Microsoft.KeyVault"
VAULT_TYPE = f"{NAMESPACE}/vaults"
DELETED_VAULT_TYPE = f"{NAMESPACE}/deletedVaults"
VAULT_SUFFIX = ".vault.azure.net"
# The audience Key Vault accepts and names in its challenge.
AUDIENCE = "https://vault.azure.net"
