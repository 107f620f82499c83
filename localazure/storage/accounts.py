"""``Microsoft.Storage/storageAccounts``: name availability, create/update/get/list/delete, the
access keys (``listKeys``, ``regenerateKey``) and the blob service's settings
(``blobServices/default``).

Shapes follow api-version 2023-05-01 (azcollection's and azure-mgmt-storage 21.2.1's). Creation
completes at once: the PUT answers 200 with ``provisioningState: Succeeded``, which the SDK's
poller accepts as a finished operation.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import check_location, normalise_location
from localazure.arm.resources import (
    delete_tree,
    now_iso,
    provider_id,
    resource_group_or_404,
    resource_or_404,
    subscription_id_or_404,
    system_data,
)
from localazure.authorization.access import is_allowed, require
from localazure.core.context import Context
from localazure.core.errors import bad_request, conflict
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.identity import principals
from localazure.storage import ACCOUNT_TYPE, BLOB_SUFFIX, FILE_SUFFIX, NAMESPACE

KEYS_KIND = "storage-keys"
BLOB_SERVICE_KIND = "storage-blob-service"
READ = f"{ACCOUNT_TYPE}/read"
WRITE = f"{ACCOUNT_TYPE}/write"
DELETE = f"{ACCOUNT_TYPE}/delete"
LIST_KEYS = f"{ACCOUNT_TYPE}/listkeys/action"
REGENERATE_KEY = f"{ACCOUNT_TYPE}/regeneratekey/action"
BLOB_SERVICE_READ = f"{ACCOUNT_TYPE}/blobServices/read"
BLOB_SERVICE_WRITE = f"{ACCOUNT_TYPE}/blobServices/write"
CHECK_NAME = f"{NAMESPACE}/checknameavailability/read"
KEY_NAMES = ("key1", "key2")

_NAME = re.compile(r"^[a-z0-9]{3,24}$")
INVALID_NAME_MESSAGE = (
    "{name} is not a valid storage account name. Storage account name must be between 3 and 24 "
    "characters in length and use numbers and lower-case letters only."
)
SKUS = {
    name.lower(): name
    for name in (
        "Standard_LRS",
        "Standard_GRS",
        "Standard_RAGRS",
        "Standard_ZRS",
        "Premium_LRS",
        "Premium_ZRS",
        "Standard_GZRS",
        "Standard_RAGZRS",
    )
}
KINDS = {
    k.lower(): k for k in ("Storage", "StorageV2", "BlobStorage", "FileStorage", "BlockBlobStorage")
}
ACCESS_TIERS = {t.lower(): t for t in ("Hot", "Cool", "Cold", "Premium")}
# Properties a client may set, with their JSON types.
_WRITABLE: dict[str, type] = {
    "allowSharedKeyAccess": bool,
    "allowBlobPublicAccess": bool,
    "allowCrossTenantReplication": bool,
    "defaultToOAuthAuthentication": bool,
    "supportsHttpsTrafficOnly": bool,
    "isHnsEnabled": bool,
    "isNfsV3Enabled": bool,
    "minimumTlsVersion": str,
    "publicNetworkAccess": str,
    "largeFileSharesState": str,
    "networkAcls": dict,
    "encryption": dict,
    "customDomain": dict,
    "immutableStorageWithVersioning": dict,
}


# -- validation ---------------------------------------------------------------------------------


def name_is_valid(name: str) -> bool:
    return bool(_NAME.match(name))


def _check_name(name: str) -> None:
    if not name_is_valid(name):
        raise bad_request("AccountNameInvalid", INVALID_NAME_MESSAGE.format(name=name))


def _sku(spec: Any) -> dict[str, str]:
    name = spec.get("name") if isinstance(spec, dict) else None
    canonical = SKUS.get(str(name or "").lower())
    if canonical is None:
        raise bad_request(
            "InvalidRequestContent" if not name else "SkuNotSupported",
            f"The SKU '{name}' is not valid. Valid SKUs are {', '.join(SKUS.values())}."
            if name
            else "The request content was invalid: 'sku.name' is required.",
        )
    return {"name": canonical, "tier": canonical.split("_", 1)[0]}


def _kind(value: Any) -> str:
    canonical = KINDS.get(str(value or "").lower())
    if canonical is None:
        raise bad_request(
            "InvalidRequestContent" if not value else "InvalidValuesForRequestParameters",
            f"Values for request parameters are invalid: kind '{value}'. Valid kinds are "
            f"{', '.join(KINDS.values())}.",
        )
    return canonical


def _access_tier(kind: str, sku: dict[str, str], requested: Any) -> str | None:
    if kind not in ("StorageV2", "BlobStorage"):
        return None
    if requested is None:
        return "Premium" if sku["tier"] == "Premium" else "Hot"
    canonical = ACCESS_TIERS.get(str(requested).lower())
    if canonical is None:
        raise bad_request(
            "InvalidValuesForRequestParameters",
            f"Values for request parameters are invalid: accessTier '{requested}'.",
        )
    return canonical


def _apply_properties(properties: dict[str, Any], requested: Any) -> None:
    if requested is None:
        return
    if not isinstance(requested, dict):
        raise bad_request("InvalidRequestContent", "'properties' must be a JSON object.")
    for key, value in requested.items():
        expected = _WRITABLE.get(key)
        if expected is None or value is None:
            continue
        if not isinstance(value, expected):
            raise bad_request(
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized: property "
                f"'{key}' must be a {expected.__name__}.",
            )
        properties[key] = value


def endpoints(name: str) -> dict[str, str]:
    return {
        "blob": f"https://{name}{BLOB_SUFFIX}/",
        "dfs": f"https://{name}.dfs.core.windows.net/",
        "file": f"https://{name}{FILE_SUFFIX}/",
        "queue": f"https://{name}.queue.core.windows.net/",
        "table": f"https://{name}.table.core.windows.net/",
        "web": f"https://{name}.z13.web.core.windows.net/",
    }


def _default_properties(name: str, location: str, stamp: str) -> dict[str, Any]:
    enabled = {"keyType": "Account", "enabled": True, "lastEnabledTime": stamp}
    return {
        "provisioningState": "Succeeded",
        "creationTime": stamp,
        "primaryEndpoints": endpoints(name),
        "primaryLocation": location,
        "statusOfPrimary": "available",
        "keyCreationTime": {key: stamp for key in KEY_NAMES},
        "supportsHttpsTrafficOnly": True,
        "minimumTlsVersion": "TLS1_2",
        "allowBlobPublicAccess": False,
        "publicNetworkAccess": "Enabled",
        "networkAcls": {
            "bypass": "AzureServices",
            "virtualNetworkRules": [],
            "ipRules": [],
            "defaultAction": "Allow",
        },
        "encryption": {
            "services": {"blob": dict(enabled), "file": dict(enabled)},
            "keySource": "Microsoft.Storage",
            "requireInfrastructureEncryption": False,
        },
        "isHnsEnabled": False,
    }


def _identity(ctx: Context, account: dict[str, Any], requested: Any) -> None:
    """Apply a requested identity block: a system-assigned identity is a principal of the tenant."""
    if not isinstance(requested, dict):
        return
    kind = str(requested.get("type") or "None")
    normalised = kind.replace(" ", "").replace(",", "").lower()
    old_principal = (account.get("identity") or {}).get("principalId")
    identity: dict[str, Any] = {"type": kind}
    if "systemassigned" in normalised:
        principal_id = (
            old_principal
            or principals.create_managed_identity(ctx, account["name"], account["id"])["objectId"]
        )
        identity.update({"principalId": principal_id, "tenantId": ctx.settings.tenant_id})
    if "userassigned" in normalised:
        identity["userAssignedIdentities"] = {
            identity_id: {
                key: value
                for key, value in (ctx.store.get_resource(identity_id) or {})
                .get("properties", {})
                .items()
                if key in ("principalId", "clientId")
            }
            for identity_id in requested.get("userAssignedIdentities") or {}
        }
    account.pop("identity", None)
    if normalised != "none":
        account["identity"] = identity
    if old_principal and old_principal != identity.get("principalId"):
        principals.delete(ctx, old_principal)


# -- keys ---------------------------------------------------------------------------------------


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


def account_keys(ctx: Context, account_id: str) -> dict[str, str]:
    """The account's two keys (base64), created on first use."""
    keys = ctx.store.get(KEYS_KIND, account_id.lower())
    if keys is None:
        keys = {name: _new_key() for name in KEY_NAMES}
        ctx.store.put(KEYS_KIND, account_id.lower(), keys)
    return keys


def _keys_result(ctx: Context, account: dict[str, Any]) -> dict[str, Any]:
    keys = account_keys(ctx, account["id"])
    created = account["properties"].get("keyCreationTime", {})
    return {
        "keys": [
            {
                "keyName": name,
                "value": keys[name],
                "permissions": "FULL",
                "creationTime": created.get(name),
            }
            for name in KEY_NAMES
        ]
    }


# -- lookups shared with the data plane ---------------------------------------------------------


def find_account(ctx: Context, name: str) -> dict[str, Any] | None:
    """The account named ``name`` in any resource group (account names are global)."""
    for account in ctx.store.list_resources(type=ACCOUNT_TYPE):
        if account["name"].lower() == name.lower():
            return account
    return None


def shared_key_allowed(account: dict[str, Any]) -> bool:
    """Azure treats an unset ``allowSharedKeyAccess`` as allowed."""
    return account["properties"].get("allowSharedKeyAccess") is not False


def forget_accounts(ctx: Context, resource_id: str, drop_content) -> None:
    """Delete hook: drop the keys, blob content and system identity of every account at or below
    ``resource_id``."""
    key = resource_id.rstrip("/").lower()
    for account in ctx.store.list_resources(type=ACCOUNT_TYPE):
        account_id = account["id"].lower()
        if account_id != key and not account_id.startswith(key + "/"):
            continue
        drop_content(ctx, account["name"])
        ctx.store.delete(KEYS_KIND, account_id)
        ctx.store.delete(BLOB_SERVICE_KIND, account_id)
        principal_id = (account.get("identity") or {}).get("principalId")
        if principal_id:
            principals.delete(ctx, principal_id)


def _blob_service(ctx: Context, account: dict[str, Any]) -> dict[str, Any]:
    stored = ctx.store.get(BLOB_SERVICE_KIND, account["id"].lower()) or {}
    return {
        "id": f"{account['id']}/blobServices/default",
        "name": "default",
        "type": f"{ACCOUNT_TYPE}/blobServices",
        "sku": account["sku"],
        "properties": {
            "cors": stored.get("cors") or {"corsRules": []},
            "deleteRetentionPolicy": stored.get("deleteRetentionPolicy")
            or {"allowPermanentDelete": False, "enabled": False},
        },
    }


# -- routes -------------------------------------------------------------------------------------


def register(router: Router, ctx: Context) -> None:
    def account_id(rg: str, name: str) -> str:
        return provider_id(ctx, rg, NAMESPACE, "storageAccounts", name)

    def account_or_404(request: Request, action: str, sub: str, rg: str, name: str) -> dict:
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, action, account_id(rg, name))
        resource_group_or_404(ctx, sub, rg)
        return resource_or_404(ctx, account_id(rg, name), ACCOUNT_TYPE, name, rg)

    def readable(request: Request, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        caller = request.state.caller
        return [a for a in found if is_allowed(ctx, caller.object_id, READ, a["id"])]

    async def check_name(request: Request, sub: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, CHECK_NAME, f"/subscriptions/{ctx.subscription_id}")
        name = str((await json_body(request)).get("name") or "")
        if not name_is_valid(name):
            return json_response(
                {
                    "nameAvailable": False,
                    "reason": "AccountNameInvalid",
                    "message": INVALID_NAME_MESSAGE.format(name=name),
                }
            )
        if find_account(ctx, name):
            return json_response(
                {
                    "nameAvailable": False,
                    "reason": "AlreadyExists",
                    "message": f"The storage account named {name} is already taken.",
                }
            )
        return json_response({"nameAvailable": True})

    async def put_account(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, WRITE, account_id(rg, name))
        group = resource_group_or_404(ctx, sub, rg)
        _check_name(name)
        body = await json_body(request)
        rid = account_id(rg, name)
        caller = request.state.caller
        sku = _sku(body.get("sku"))
        kind = _kind(body.get("kind"))
        requested = body.get("properties") or {}
        existing = ctx.store.get_resource(rid)
        if existing:
            location = normalise_location(body.get("location")) or existing["location"]
            if location != existing["location"]:
                raise conflict(
                    "InvalidResourceLocation",
                    f"The resource '{existing['name']}' already exists in location "
                    f"'{existing['location']}' in resource group '{group['name']}'. A resource "
                    f"with the same name cannot be created in location '{body.get('location')}'. "
                    "Please select a new resource name.",
                )
            account = existing
        else:
            location = check_location(body.get("location"), ACCOUNT_TYPE)
            taken = find_account(ctx, name)
            if taken:
                raise conflict(
                    "StorageAccountAlreadyTaken",
                    f"The storage account named {name} is already taken.",
                )
            account = {
                "id": rid,
                "name": name,
                "type": ACCOUNT_TYPE,
                "location": location,
                "properties": _default_properties(name, location, now_iso()),
            }
        account.update({"sku": sku, "kind": kind, "tags": body.get("tags") or {}})
        account["systemData"] = system_data(existing, caller)
        _apply_properties(account["properties"], requested)
        tier = _access_tier(kind, sku, requested.get("accessTier"))
        account["properties"].pop("accessTier", None)
        if tier:
            account["properties"]["accessTier"] = tier
        with ctx.store.transaction():
            _identity(ctx, account, body.get("identity"))
            ctx.store.put_resource(account)
            account_keys(ctx, rid)
        return json_response(account)

    async def get_account(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        return json_response(account_or_404(request, READ, sub, rg, name))

    async def patch_account(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = account_or_404(request, WRITE, sub, rg, name)
        body = await json_body(request)
        if body.get("sku") is not None:
            account["sku"] = _sku(body["sku"])
        if body.get("kind") is not None:
            account["kind"] = _kind(body["kind"])
        if body.get("tags") is not None:
            account["tags"] = body["tags"]
        requested = body.get("properties") or {}
        _apply_properties(account["properties"], requested)
        if requested.get("accessTier") is not None:
            tier = _access_tier(account["kind"], account["sku"], requested["accessTier"])
            if tier:
                account["properties"]["accessTier"] = tier
        _identity(ctx, account, body.get("identity"))
        account["systemData"] = system_data(account, request.state.caller)
        ctx.store.put_resource(account)
        return json_response(account)

    async def delete_account(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        require(ctx, request.state.caller, DELETE, account_id(rg, name))
        resource_group_or_404(ctx, sub, rg)
        account = ctx.store.get_resource(account_id(rg, name))
        if account is None:
            return empty(204)
        delete_tree(ctx, account["id"])
        return empty(200)

    async def list_in_group(request: Request, sub: str, rg: str) -> Response:
        require_api_version(request)
        group = resource_group_or_404(ctx, sub, rg)
        found = ctx.store.list_resources(type=ACCOUNT_TYPE, parent=group["id"])
        return json_response(list_page(readable(request, found)))

    async def list_in_subscription(request: Request, sub: str) -> Response:
        require_api_version(request)
        subscription_id_or_404(ctx, sub)
        found = ctx.store.list_resources(type=ACCOUNT_TYPE)
        return json_response(list_page(readable(request, found)))

    async def list_keys(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = account_or_404(request, LIST_KEYS, sub, rg, name)
        return json_response(_keys_result(ctx, account))

    async def regenerate_key(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = account_or_404(request, REGENERATE_KEY, sub, rg, name)
        which = str((await json_body(request)).get("keyName") or "")
        if which not in KEY_NAMES:
            raise bad_request(
                "InvalidValuesForRequestParameters",
                f"Values for request parameters are invalid: keyName '{which}'. Use 'key1' or "
                "'key2'.",
            )
        keys = account_keys(ctx, account["id"])
        keys[which] = _new_key()
        with ctx.store.transaction():
            ctx.store.put(KEYS_KIND, account["id"].lower(), keys)
            account["properties"].setdefault("keyCreationTime", {})[which] = now_iso()
            ctx.store.put_resource(account)
        return json_response(_keys_result(ctx, account))

    async def get_blob_service(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = account_or_404(request, BLOB_SERVICE_READ, sub, rg, name)
        return json_response(_blob_service(ctx, account))

    async def put_blob_service(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = account_or_404(request, BLOB_SERVICE_WRITE, sub, rg, name)
        requested = (await json_body(request)).get("properties") or {}
        stored = ctx.store.get(BLOB_SERVICE_KIND, account["id"].lower()) or {}
        for key in ("cors", "deleteRetentionPolicy"):
            if isinstance(requested.get(key), dict):
                stored[key] = requested[key]
        ctx.store.put(BLOB_SERVICE_KIND, account["id"].lower(), stored)
        return json_response(_blob_service(ctx, account))

    async def list_blob_services(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = account_or_404(request, BLOB_SERVICE_READ, sub, rg, name)
        return json_response(list_page([_blob_service(ctx, account)]))

    sub_prefix = "/subscriptions/{sub}/providers/Microsoft.Storage"
    rg_prefix = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage"
    one = rg_prefix + "/storageAccounts/{name}"
    router.add("POST", sub_prefix + "/checkNameAvailability", check_name)
    router.add("GET", sub_prefix + "/storageAccounts", list_in_subscription)
    router.add("GET", rg_prefix + "/storageAccounts", list_in_group)
    router.add("PUT", one, put_account)
    router.add("GET", one, get_account)
    router.add("PATCH", one, patch_account)
    router.add("DELETE", one, delete_account)
    router.add("POST", one + "/listKeys", list_keys)
    router.add("POST", one + "/regenerateKey", regenerate_key)
    router.add("GET", one + "/blobServices", list_blob_services)
    router.add("GET", one + "/blobServices/default", get_blob_service)
    router.add("PUT", one + "/blobServices/default", put_blob_service)
