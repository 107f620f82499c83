"""The shapes Key Vault speaks: vault resources (api-version 2023-07-01, which azure-mgmt-keyvault
10.3.1 and azcollection's ``azure_rm_keyvault`` use), deleted vaults, and the data plane's secret
bundles, items and deleted secrets (api-versions 7.0 to 7.6 and 2025-07-01), with the validation Key Vault applies."""

from __future__ import annotations

import re
from typing import Any

from localazure.core.errors import AzureError, bad_request
from localazure.keyvault import DELETED_VAULT_TYPE, VAULT_SUFFIX, VAULT_TYPE

DEFAULT_RETENTION_DAYS = 90
_VAULT_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
SKUS = ("standard", "premium")
# Access-policy permissions on secrets, and the operation each data-plane route needs.
SECRET_PERMISSIONS = ("get", "list", "set", "delete", "backup", "restore", "recover", "purge")
# Settable booleans of a vault: JSON name -> default.
_FLAGS = {
    "enabledForDeployment": False,
    "enabledForDiskEncryption": False,
    "enabledForTemplateDeployment": False,
    "enableSoftDelete": True,
    "enableRbacAuthorization": False,
}


# -- names ------------------------------------------------------------------------------------


def check_vault_name(name: str) -> None:
    if not _VAULT_NAME.match(name) or "--" in name:
        raise bad_request(
            "VaultNameNotValid",
            f"The vault name '{name}' is invalid. A vault's name must be between 3-24 "
            "alphanumeric characters. The name must begin with a letter, end with a letter or "
            "digit, and not contain consecutive hyphens. Follow this link for more information: "
            "https://go.microsoft.com/fwlink/?linkid=2147742",
        )


def vault_name_is_valid(name: str) -> bool:
    return bool(_VAULT_NAME.match(name)) and "--" not in name


def check_secret_name(name: str) -> None:
    if not _SECRET_NAME.match(name):
        raise data_error(
            400,
            "BadParameter",
            f"The request URI contains an invalid name: {name}. Secret names may contain only "
            "alphanumeric characters and dashes, up to 127 characters.",
        )


def vault_uri(name: str) -> str:
    return f"https://{name.lower()}{VAULT_SUFFIX}/"


# -- vaults -----------------------------------------------------------------------------------


def _sku(value: Any) -> dict[str, str]:
    name = value.get("name") if isinstance(value, dict) else None
    if not name or str(name).lower() not in SKUS:
        raise bad_request(
            "BadRequest",
            f"The SKU '{name}' is not valid for a key vault: properties.sku must be "
            "{'family': 'A', 'name': 'standard' or 'premium'}.",
        )
    return {"family": "A", "name": str(name).lower()}


def _access_policies(value: Any, tenant_id: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request("BadRequest", "properties.accessPolicies must be a list.")
    policies = []
    for policy in value:
        if not isinstance(policy, dict) or not policy.get("objectId"):
            raise bad_request("BadRequest", "Every access policy needs an objectId.")
        permissions = policy.get("permissions") or {}
        policies.append(
            {
                "tenantId": policy.get("tenantId") or tenant_id,
                "objectId": str(policy["objectId"]).lower(),
                **(
                    {"applicationId": policy["applicationId"]}
                    if policy.get("applicationId")
                    else {}
                ),
                "permissions": {
                    kind: [str(p).lower() for p in permissions.get(kind) or []]
                    for kind in ("keys", "secrets", "certificates", "storage")
                    if permissions.get(kind) is not None
                },
            }
        )
    return policies


def vault_properties(
    requested: Any, tenant_id: str, name: str, existing: dict[str, Any] | None
) -> dict[str, Any]:
    """The properties a PUT leaves: what the client may set, validated, over what the service
    keeps (``vaultUri``, ``provisioningState``, purge protection once enabled)."""
    if not isinstance(requested, dict):
        raise bad_request("BadRequest", "The request body must have 'properties'.")
    if not requested.get("tenantId"):
        raise bad_request("BadRequest", "properties.tenantId is required.")
    if str(requested["tenantId"]).lower() != tenant_id.lower():
        raise bad_request(
            "BadRequest",
            f"The tenant '{requested['tenantId']}' is not the tenant of the subscription "
            f"({tenant_id}).",
        )
    old = (existing or {}).get("properties", {})
    props: dict[str, Any] = {
        "sku": _sku(requested.get("sku")),
        "tenantId": tenant_id,
        "accessPolicies": _access_policies(requested.get("accessPolicies"), tenant_id),
    }
    for flag, default in _FLAGS.items():
        value = requested.get(flag)
        props[flag] = bool(value) if value is not None else old.get(flag, default)
    if props["enableSoftDelete"] is False:
        raise bad_request(
            "BadRequest",
            "The property 'enableSoftDelete' cannot be set to false. Soft delete is always on "
            "for new vaults: https://aka.ms/softdeletechange",
        )
    retention = requested.get("softDeleteRetentionInDays")
    if retention is None:
        retention = old.get("softDeleteRetentionInDays", DEFAULT_RETENTION_DAYS)
    if not isinstance(retention, int) or isinstance(retention, bool) or not 7 <= retention <= 90:
        raise bad_request(
            "BadRequest",
            f"softDeleteRetentionInDays must be a whole number from 7 to 90, not {retention!r}.",
        )
    if existing and retention != old.get("softDeleteRetentionInDays"):
        raise bad_request(
            "BadRequest",
            "The property 'softDeleteRetentionInDays' cannot be changed once the vault exists.",
        )
    props["softDeleteRetentionInDays"] = retention
    purge_protection = requested.get("enablePurgeProtection")
    if old.get("enablePurgeProtection") and purge_protection is False:
        raise bad_request(
            "BadRequest",
            "The property 'enablePurgeProtection' cannot be set to false: once enabled, purge "
            "protection cannot be turned off.",
        )
    if purge_protection or old.get("enablePurgeProtection"):
        props["enablePurgeProtection"] = True
    network_access = requested.get("publicNetworkAccess") or old.get("publicNetworkAccess")
    props["publicNetworkAccess"] = str(network_access or "Enabled").capitalize()
    if requested.get("networkAcls") is not None:
        props["networkAcls"] = requested["networkAcls"]
    props["vaultUri"] = vault_uri(name)
    props["provisioningState"] = "Succeeded"
    return props


def vault_body(
    rid: str,
    name: str,
    location: str,
    tags: dict[str, str],
    properties: dict[str, Any],
    system_data: dict[str, Any],
) -> dict[str, Any]:
    return {
        "id": rid,
        "name": name,
        "type": VAULT_TYPE,
        "location": location,
        "tags": tags,
        "systemData": system_data,
        "properties": properties,
    }


def deleted_vault_id(subscription_id: str, location: str, name: str) -> str:
    return (
        f"/subscriptions/{subscription_id}/providers/Microsoft.KeyVault/locations/{location}"
        f"/deletedVaults/{name}"
    )


def deleted_vault_view(subscription_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """A deleted vault as ``deletedVaults`` GET returns it (the stored copy of the vault is not
    part of it)."""
    vault = record["vault"]
    return {
        "id": deleted_vault_id(subscription_id, vault["location"], vault["name"]),
        "name": vault["name"],
        "type": DELETED_VAULT_TYPE,
        "properties": {
            "vaultId": vault["id"],
            "location": vault["location"],
            "deletionDate": record["deletionDate"],
            "scheduledPurgeDate": record["scheduledPurgeDate"],
            "tags": vault.get("tags") or {},
            "purgeProtectionEnabled": bool(vault["properties"].get("enablePurgeProtection")),
        },
    }


# -- secrets ----------------------------------------------------------------------------------


class KeyVaultError(AzureError):
    """Key Vault's data-plane error: ``{"error": {"code", "message", "innererror": {"code"}}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        inner: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(status, code, message, headers=headers)
        self.inner = inner

    def body(self) -> dict[str, Any]:
        payload = super().body()
        if self.inner:
            payload["error"]["innererror"] = {"code": self.inner}
        return payload


def data_error(status: int, code: str, message: str, inner: str | None = None) -> KeyVaultError:
    return KeyVaultError(status, code, message, inner)


def secret_not_found(name: str) -> AzureError:
    return data_error(
        404,
        "SecretNotFound",
        f"A secret with (name/id) {name} was not found in this key vault. If you recently "
        "deleted this secret you may be able to recover it using the correct recovery command. "
        "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def deleted_secret_not_found(name: str) -> AzureError:
    return data_error(
        404,
        "SecretNotFound",
        f"Deleted Secret not found: {name}. For help resolving this issue, please see "
        "https://go.microsoft.com/fwlink/?linkid=2125182",
    )


def attributes(version: dict[str, Any], retention_days: int) -> dict[str, Any]:
    attrs = {
        "enabled": version["enabled"],
        "created": version["created"],
        "updated": version["updated"],
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": retention_days,
    }
    for key in ("nbf", "exp"):
        if version.get(key) is not None:
            attrs[key] = version[key]
    return attrs


def secret_id(base: str, name: str, version: str | None = None) -> str:
    return f"{base}/secrets/{name}" + (f"/{version}" if version else "")


def secret_item(
    base: str, name: str, version: dict[str, Any], retention: int, *, versioned: bool
) -> dict[str, Any]:
    """A secret as lists return it: its properties, never its value."""
    item: dict[str, Any] = {
        "id": secret_id(base, name, version["version"] if versioned else None),
        "attributes": attributes(version, retention),
        "tags": version.get("tags") or {},
    }
    if version.get("contentType") is not None:
        item["contentType"] = version["contentType"]
    return item


def secret_bundle(
    base: str, name: str, version: dict[str, Any], retention: int, value: str | None
) -> dict[str, Any]:
    bundle = secret_item(base, name, version, retention, versioned=True)
    if value is not None:
        bundle = {"value": value, **bundle}
    return bundle


def deleted_secret(
    base: str, name: str, version: dict[str, Any], retention: int, deleted: dict[str, Any]
) -> dict[str, Any]:
    return {
        "recoveryId": f"{base}/deletedsecrets/{name}",
        "deletedDate": deleted["deletedDate"],
        "scheduledPurgeDate": deleted["scheduledPurgeDate"],
        **secret_item(base, name, version, retention, versioned=True),
    }


def requested_attributes(body: dict[str, Any]) -> dict[str, Any]:
    """``enabled``, ``nbf`` and ``exp`` from a request's ``attributes`` (unix seconds)."""
    attrs = body.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise data_error(400, "BadParameter", "'attributes' must be a JSON object.")
    wanted: dict[str, Any] = {}
    if attrs.get("enabled") is not None:
        wanted["enabled"] = bool(attrs["enabled"])
    for key in ("nbf", "exp"):
        if attrs.get(key) is not None:
            if not isinstance(attrs[key], int | float) or isinstance(attrs[key], bool):
                raise data_error(400, "BadParameter", f"attributes.{key} must be a unix time.")
            wanted[key] = int(attrs[key])
    return wanted
