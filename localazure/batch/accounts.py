"""Batch accounts (``.../providers/Microsoft.Batch/batchAccounts/{name}``): create, read, update,
delete, ``listKeys``/``regenerateKeys``, the account's identity, and its core quotas.

The shared keys are kept in a record of their own (never in the resource), so that no GET or
list answer carries them. The core quotas are the account's (Batch counts cores per account, not
per subscription): total dedicated, low priority, and dedicated per VM family; the admin API
changes them (``PUT /_localazure/batch/accounts/{name}/quota``).
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    delete_tree,
    in_resource_group,
    in_subscription,
    now_iso,
    provider_id,
    resource_group_or_404,
    system_data,
)
from localazure.authorization.access import covers
from localazure.batch import ACCOUNT_TYPE, DNS_SUFFIX, NAMESPACE
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request, not_found
from localazure.core.http import json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.identity import principals
from localazure.nodes.vm_catalog import families

READ = f"{ACCOUNT_TYPE}/read"
WRITE = f"{ACCOUNT_TYPE}/write"
DELETE = f"{ACCOUNT_TYPE}/delete"
LIST_KEYS = f"{ACCOUNT_TYPE}/listKeys/action"
REGENERATE_KEYS = f"{ACCOUNT_TYPE}/regenerateKeys/action"
KEYS_KIND = "batch-account-keys"
QUOTA_KIND = "batch-account-quota"
_NAME = re.compile(r"^[a-z0-9]{3,24}$")
_STORAGE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/"
    r"[a-z0-9]{3,24}$",
    re.IGNORECASE,
)
_IDENTITY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.ManagedIdentity/"
    r"userAssignedIdentities/[^/]+$",
    re.IGNORECASE,
)
ALLOCATION_MODES = ("BatchService", "UserSubscription")
AUTH_MODES = ("SharedKey", "AAD", "TaskAuthenticationToken")


@dataclass(frozen=True)
class CoreQuota:
    """An account's core quotas (Batch's defaults for a new account are region-dependent; the
    emulator's are generous enough for the evaluation and changed through the admin API)."""

    dedicated: int = 100
    low_priority: int = 100
    family_default: int = 100
    families: dict[str, int] = field(default_factory=dict)
    pools: int = 100

    def family_limit(self, family: str) -> int:
        return self.families.get(family, self.family_default)


def account_id(ctx: Context, resource_group: str, name: str) -> str:
    return provider_id(ctx, resource_group, NAMESPACE, "batchAccounts", name)


def endpoint_host(account: dict[str, Any]) -> str:
    return f"{account['name']}.{account['location']}{DNS_SUFFIX}"


def by_host(ctx: Context, host: str) -> dict[str, Any] | None:
    """The account whose endpoint is ``host`` (``<account>.<region>.batch.azure.com``)."""
    for account in ctx.store.list_resources(type=ACCOUNT_TYPE):
        if endpoint_host(account).lower() == host.lower():
            return account
    return None


def account_not_found(name: str, rg: str) -> AzureError:
    return not_found(
        "ResourceNotFound",
        f"The Resource '{ACCOUNT_TYPE}/{name}' under resource group '{rg}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def load(ctx: Context, sub: str, rg: str, name: str) -> dict[str, Any]:
    resource_group_or_404(ctx, sub, rg)
    account = ctx.store.get_resource(account_id(ctx, rg, name))
    if account is None:
        raise account_not_found(name, rg)
    return account


# -- keys -----------------------------------------------------------------------------------------


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


def keys(ctx: Context, account: dict[str, Any]) -> dict[str, str]:
    return ctx.store.get(KEYS_KIND, account["id"].lower())


def _keys_body(account: dict[str, Any], stored: dict[str, str]) -> dict[str, Any]:
    return {
        "accountName": account["name"],
        "primary": stored["primary"],
        "secondary": stored["secondary"],
    }


def _require_shared_key_mode(account: dict[str, Any]) -> None:
    if "SharedKey" not in account["properties"]["allowedAuthenticationModes"]:
        raise AzureError(
            409,
            "OperationNotValidForAuthenticationMode",
            "The operation is not allowed because 'SharedKey' is not one of the account's "
            "allowedAuthenticationModes.",
        )


# -- quota ----------------------------------------------------------------------------------------


def quota(ctx: Context, account: dict[str, Any]) -> CoreQuota:
    return CoreQuota(**(ctx.store.get(QUOTA_KIND, account["id"].lower()) or {}))


def update_quota(ctx: Context, account: dict[str, Any], changes: dict[str, Any]) -> CoreQuota:
    current = asdict(quota(ctx, account))
    unknown = sorted(set(changes) - set(current))
    if unknown:
        raise ValueError(f"unknown quota field(s) {unknown}; known fields are {sorted(current)}")
    for name in ("dedicated", "low_priority", "family_default", "pools"):
        if name in changes:
            current[name] = _whole(name, changes[name])
    for family, limit in (changes.get("families") or {}).items():
        if family not in families():
            raise ValueError(f"unknown VM family '{family}'; known families are {families()}")
        current["families"][family] = _whole(family, limit)
    ctx.store.put(QUOTA_KIND, account["id"].lower(), current)
    return quota(ctx, account)


def _whole(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"quota '{name}' must be a whole number >= 0, not {value!r}")
    return value


def _quota_properties(limits: CoreQuota) -> dict[str, Any]:
    return {
        "dedicatedCoreQuota": limits.dedicated,
        "lowPriorityCoreQuota": limits.low_priority,
        "dedicatedCoreQuotaPerVMFamily": [
            {"name": family, "coreQuota": limits.family_limit(family)} for family in families()
        ],
        "dedicatedCoreQuotaPerVMFamilyEnforced": True,
        "poolQuota": limits.pools,
        "activeJobAndJobScheduleQuota": 300,
    }


def view(ctx: Context, account: dict[str, Any]) -> dict[str, Any]:
    body = {**account, "properties": {**account["properties"]}}
    body["properties"].update(_quota_properties(quota(ctx, account)))
    return body


# -- validation -----------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise bad_request(
            "AccountNameInvalid",
            f"The account name '{name}' is invalid: Batch account names must be between 3 and "
            "24 characters in length and use numbers and lower-case letters only.",
        )


def _identity(
    ctx: Context, requested: dict[str, Any] | None, existing: dict[str, Any] | None, rid: str
) -> dict[str, Any]:
    kind = (requested or {}).get("type") or (existing or {}).get("type") or "None"
    if kind not in ("None", "SystemAssigned", "UserAssigned"):
        raise bad_request(
            "InvalidParameter",
            f"The identity type '{kind}' is not supported; use None, SystemAssigned or "
            "UserAssigned.",
            target="identity.type",
        )
    if kind == "None":
        if existing and existing.get("principalId"):
            principals.delete(ctx, existing["principalId"])
        return {"type": "None"}
    if kind == "SystemAssigned":
        if existing and existing.get("type") == "SystemAssigned":
            return existing
        principal = principals.create_managed_identity(ctx, rid.rsplit("/", 1)[-1], rid)
        return {
            "type": "SystemAssigned",
            "principalId": principal["objectId"],
            "tenantId": ctx.settings.tenant_id,
        }
    return {"type": "UserAssigned", "userAssignedIdentities": user_identities(ctx, requested)}


def user_identities(ctx: Context, requested: dict[str, Any] | None) -> dict[str, Any]:
    """The ``userAssignedIdentities`` map with each identity's principal and client ids; every
    id must name an existing user-assigned identity."""
    named = (requested or {}).get("userAssignedIdentities") or {}
    if not named:
        raise bad_request(
            "InvalidParameter",
            "An identity of type UserAssigned must list at least one user-assigned identity.",
            target="identity.userAssignedIdentities",
        )
    resolved = {}
    for identity_id in named:
        if not _IDENTITY_ID.match(identity_id):
            raise bad_request(
                "InvalidParameter",
                f"'{identity_id}' is not a user-assigned identity resource id.",
                target="identity.userAssignedIdentities",
            )
        identity = ctx.store.get_resource(identity_id)
        if identity is None:
            raise bad_request(
                "FailedIdentityOperation",
                f"The user-assigned identity '{identity_id}' was not found.",
                target="identity.userAssignedIdentities",
            )
        resolved[identity["id"]] = {
            "principalId": identity["properties"]["principalId"],
            "clientId": identity["properties"]["clientId"],
        }
    return resolved


def _auto_storage(value: dict[str, Any] | None, existing: Any) -> dict[str, Any] | None:
    if value is None:
        return existing
    storage_id = value.get("storageAccountId") or ""
    if not _STORAGE_ID.match(storage_id):
        raise bad_request(
            "InvalidParameter",
            f"autoStorage.storageAccountId '{storage_id}' is not a storage account resource id "
            "(/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/"
            "storageAccounts/{name}).",
            target="autoStorage.storageAccountId",
        )
    mode = value.get("authenticationMode") or "StorageKeys"
    if mode not in ("StorageKeys", "BatchAccountManagedIdentity"):
        raise bad_request(
            "InvalidParameter",
            f"autoStorage.authenticationMode '{mode}' is not one of StorageKeys, "
            "BatchAccountManagedIdentity.",
            target="autoStorage.authenticationMode",
        )
    stored = {"storageAccountId": storage_id, "authenticationMode": mode}
    if value.get("nodeIdentityReference"):
        stored["nodeIdentityReference"] = value["nodeIdentityReference"]
    stored["lastKeySync"] = (existing or {}).get("lastKeySync") or now_iso()
    return stored


def _properties(
    ctx: Context, name: str, location: str, props: dict[str, Any], existing: dict[str, Any] | None
) -> dict[str, Any]:
    old = (existing or {}).get("properties") or {}
    mode = props.get("poolAllocationMode") or old.get("poolAllocationMode") or "BatchService"
    if mode not in ALLOCATION_MODES:
        raise bad_request(
            "InvalidParameter",
            f"poolAllocationMode '{mode}' is not one of {', '.join(ALLOCATION_MODES)}.",
            target="poolAllocationMode",
        )
    if existing and mode != old["poolAllocationMode"]:
        raise bad_request(
            "PropertyCannotBeUpdated",
            "The poolAllocationMode of a Batch account cannot be changed after it is created.",
            target="poolAllocationMode",
        )
    if mode == "UserSubscription" and not (
        props.get("keyVaultReference") or old.get("keyVaultReference")
    ):
        raise bad_request(
            "InvalidParameter",
            "A Batch account with poolAllocationMode UserSubscription needs a keyVaultReference "
            "(the id and URL of a key vault in the same region).",
            target="keyVaultReference",
        )
    auth_modes = props.get("allowedAuthenticationModes") or old.get("allowedAuthenticationModes")
    auth_modes = list(auth_modes or AUTH_MODES)
    bad_modes = [m for m in auth_modes if m not in AUTH_MODES]
    if bad_modes:
        raise bad_request(
            "InvalidParameter",
            f"allowedAuthenticationModes {bad_modes} are not among {list(AUTH_MODES)}.",
            target="allowedAuthenticationModes",
        )
    host = f"{name}.{location}{DNS_SUFFIX}"
    return {
        "accountEndpoint": host,
        "nodeManagementEndpoint": f"{secrets.token_hex(8)}.{location}.service.batch.azure.com",
        **{k: v for k, v in old.items() if k in ("nodeManagementEndpoint",)},
        "provisioningState": "Succeeded",
        "poolAllocationMode": mode,
        "keyVaultReference": props.get("keyVaultReference") or old.get("keyVaultReference"),
        "autoStorage": _auto_storage(props.get("autoStorage"), old.get("autoStorage")),
        "publicNetworkAccess": props.get("publicNetworkAccess")
        or old.get("publicNetworkAccess")
        or "Enabled",
        "encryption": props.get("encryption")
        or old.get("encryption")
        or {"keySource": "Microsoft.Batch"},
        "allowedAuthenticationModes": auth_modes,
    }


# -- routes ---------------------------------------------------------------------------------------


@operations.on_complete("batch-delete")
def _delete_resource(ctx: Context, params: dict[str, Any]) -> None:
    """The end of a Batch account's or pool's delete operation."""
    if ctx.store.get_resource(params["id"]) is not None:
        delete_tree(ctx, params["id"])


def drop_under(ctx: Context, resource_id: str) -> None:
    """Delete hook: keys, quota and the system identity of deleted accounts go with them."""
    for account in ctx.store.list_resources(type=ACCOUNT_TYPE):
        key = account["id"].lower()
        if covers(resource_id, key):
            ctx.store.delete(KEYS_KIND, key)
            ctx.store.delete(QUOTA_KIND, key)
            principal = (account.get("identity") or {}).get("principalId")
            if principal:
                principals.delete(ctx, principal)


def register(router: Router, ctx: Context) -> None:
    async def put_account(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        caller = request.state.caller
        group = request.state.parent
        _check_name(name)
        body = await json_body(request)
        rid = account_id(ctx, group["name"], name)
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            location = check_location(body.get("location"), ACCOUNT_TYPE)
            if existing and location != existing["location"]:
                raise bad_request(
                    "InvalidResourceLocation",
                    f"The resource '{name}' already exists in location '{existing['location']}'.",
                )
            account = {
                "id": rid,
                "name": name,
                "type": ACCOUNT_TYPE,
                "location": location,
                "tags": body.get("tags") or {},
                "identity": _identity(
                    ctx, body.get("identity"), (existing or {}).get("identity"), rid
                ),
                "properties": _properties(
                    ctx, name, location, body.get("properties") or {}, existing
                ),
                "systemData": system_data(existing, caller),
            }
            ctx.store.put_resource(account)
            if existing is None:
                ctx.store.put(
                    KEYS_KIND, rid.lower(), {"primary": _new_key(), "secondary": _new_key()}
                )
        return json_response(view(ctx, account))

    async def get_account(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        return json_response(view(ctx, load(ctx, sub, rg, name)))

    async def patch_account(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        caller = request.state.caller
        account = load(ctx, sub, rg, name)
        body = await json_body(request)
        with ctx.store.transaction():
            if "tags" in body:
                account["tags"] = body["tags"] or {}
            if body.get("identity") is not None:
                account["identity"] = _identity(
                    ctx, body["identity"], account.get("identity"), account["id"]
                )
            props = body.get("properties") or {}
            if props:
                account["properties"] = _properties(
                    ctx, account["name"], account["location"], props, account
                )
            account["systemData"] = system_data(account, caller)
            ctx.store.put_resource(account)
        return json_response(view(ctx, account))

    async def delete_account(request: Request, sub: str, rg: str, name: str) -> Response:
        version = require_api_version(request)
        account = load(ctx, sub, rg, name)
        return operations.accepted(
            ctx,
            version,
            namespace=NAMESPACE,
            location=account["location"],
            kind="batch-delete",
            params={"id": account["id"]},
        )

    async def list_in_group(request: Request, sub: str, rg: str) -> Response:
        require_api_version(request)
        group = request.state.parent
        items = ctx.store.list_resources(type=ACCOUNT_TYPE, parent=group["id"])
        return json_response(list_page([view(ctx, a) for a in items]))

    async def list_in_subscription(request: Request, sub: str) -> Response:
        require_api_version(request)
        items = ctx.store.list_resources(type=ACCOUNT_TYPE)
        return json_response(list_page([view(ctx, a) for a in items]))

    async def list_keys(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = load(ctx, sub, rg, name)
        _require_shared_key_mode(account)
        return json_response(_keys_body(account, keys(ctx, account)))

    async def regenerate_keys(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = load(ctx, sub, rg, name)
        _require_shared_key_mode(account)
        key_name = (await json_body(request)).get("keyName")
        if key_name not in ("Primary", "Secondary"):
            raise bad_request(
                "InvalidParameter",
                f"keyName must be Primary or Secondary, not {key_name!r}.",
                target="keyName",
            )
        stored = keys(ctx, account)
        stored[key_name.lower()] = _new_key()
        ctx.store.put(KEYS_KIND, account["id"].lower(), stored)
        return json_response(_keys_body(account, stored))

    prefix = f"/subscriptions/{{sub}}/resourceGroups/{{rg}}/providers/{ACCOUNT_TYPE}"
    in_group, in_sub = in_resource_group(ctx), in_subscription(ctx)
    one = prefix + "/{name}"
    scope = "{parent}/providers/" + ACCOUNT_TYPE + "/{name}"
    for method, handler, action in (
        ("PUT", put_account, WRITE),
        ("GET", get_account, READ),
        ("PATCH", patch_account, WRITE),
        ("DELETE", delete_account, DELETE),
    ):
        router.add(method, one, handler, parent=in_group, action=action, scope=scope)
    router.add("POST", one + "/listKeys", list_keys, parent=in_group, action=LIST_KEYS, scope=scope)
    router.add(
        "POST",
        one + "/regenerateKeys",
        regenerate_keys,
        parent=in_group,
        action=REGENERATE_KEYS,
        scope=scope,
    )
    router.add("GET", prefix, list_in_group, parent=in_group, action=READ)
    router.add(
        "GET",
        f"/subscriptions/{{sub}}/providers/{ACCOUNT_TYPE}",
        list_in_subscription,
        parent=in_sub,
        action=READ,
    )
