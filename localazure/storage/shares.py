"""Azure File shares: ARM resources (``.../storageAccounts/{name}/fileServices/default/shares/
{share}``) whose content is a real directory on disk, ``<state>/storage/<account>/shares/<share>/``.

The same share is reached through the management API (azure-mgmt-storage ``file_shares``,
azcollection ``azure_rm_storageshare``), the File data plane (``file_dataplane``) and the
container groups that mount it (``localazure.containerinstance``): a file a container writes into
its mount is the file the data plane serves.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import (
    provider_id,
    resource_group_or_404,
    resource_or_404,
    subscription_id_or_404,
)
from localazure.authorization.access import require
from localazure.core.context import Context
from localazure.core.errors import bad_request, not_found
from localazure.core.http import empty, json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.storage import ACCOUNT_TYPE, NAMESPACE
from localazure.storage.blobs import account_dir, iso_date, new_etag

SHARE_TYPE = f"{ACCOUNT_TYPE}/fileServices/shares"
READ = f"{SHARE_TYPE}/read"
WRITE = f"{SHARE_TYPE}/write"
DELETE = f"{SHARE_TYPE}/delete"
# Azure's rule: 3-63 lower-case letters, digits and single hyphens, starting with a letter or digit.
SHARE_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$")
DEFAULT_QUOTA_GIB = 5120
ACCESS_TIERS = ("TransactionOptimized", "Hot", "Cool", "Premium")


def share_id(account: dict[str, Any], name: str) -> str:
    return f"{account['id']}/fileServices/default/shares/{name}"


def share_dir(ctx: Context, account_name: str, share: str) -> Path:
    return account_dir(ctx, account_name) / "shares" / share


def name_is_valid(name: str) -> bool:
    return SHARE_NAME.match(name) is not None


def get(ctx: Context, account: dict[str, Any], name: str) -> dict[str, Any] | None:
    return ctx.store.get_resource(share_id(account, name))


def list_shares(ctx: Context, account: dict[str, Any]) -> list[dict[str, Any]]:
    prefix = f"{account['id']}/fileServices/default/shares/".lower()
    shares = [
        s for s in ctx.store.list_resources(type=SHARE_TYPE) if s["id"].lower().startswith(prefix)
    ]
    return sorted(shares, key=lambda s: s["name"])


def _body(account: dict[str, Any], name: str, properties: dict[str, Any], existing) -> dict:
    now = iso_date(time.time())
    base = (existing or {}).get("properties") or {
        "creationTime": now,
        "enabledProtocols": "SMB",
        "leaseStatus": "unlocked",
        "leaseState": "available",
        "shareUsageBytes": 0,
    }
    quota = properties.get("shareQuota", base.get("shareQuota", DEFAULT_QUOTA_GIB))
    if not isinstance(quota, int) or not 1 <= quota <= 102400:
        raise bad_request(
            "InvalidRequestPropertyValue",
            f"The value for shareQuota '{quota}' is out of range: 1 to 102400 GiB.",
        )
    tier = properties.get("accessTier") or base.get("accessTier") or "TransactionOptimized"
    tier = next((t for t in ACCESS_TIERS if t.lower() == str(tier).lower()), None)
    if tier is None:
        raise bad_request(
            "InvalidRequestPropertyValue",
            f"accessTier is one of {', '.join(ACCESS_TIERS)}.",
        )
    merged = {
        **base,
        "shareQuota": quota,
        "accessTier": tier,
        "metadata": properties.get("metadata", base.get("metadata") or {}),
        "lastModifiedTime": now,
    }
    return {
        "id": share_id(account, name),
        "name": name,
        "type": SHARE_TYPE,
        "etag": new_etag(),
        "properties": merged,
    }


def create_or_update(
    ctx: Context, account: dict[str, Any], name: str, properties: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """The share's resource and directory; True when it was created."""
    existing = get(ctx, account, name)
    body = _body(account, name, properties, existing)
    ctx.store.put_resource(body)
    share_dir(ctx, account["name"], name).mkdir(parents=True, exist_ok=True)
    return body, existing is None


def delete(ctx: Context, account: dict[str, Any], name: str) -> bool:
    if not ctx.store.delete_resource(share_id(account, name)):
        return False
    shutil.rmtree(share_dir(ctx, account["name"], name), ignore_errors=True)
    return True


def remove_orphaned_dirs(ctx: Context) -> None:
    """Start-up/reset: share directories whose share resource is gone (all, after a reset)."""
    root = ctx.settings.state_dir / "storage"
    if not root.is_dir():
        return
    kept = set()
    for share in ctx.store.list_resources(type=SHARE_TYPE):
        account = share["id"].split("/storageAccounts/", 1)[1].split("/", 1)[0]
        kept.add((account.lower(), share["name"]))
    for path in root.glob("*/shares/*"):
        if (path.parent.parent.name, path.name) not in kept:
            shutil.rmtree(path, ignore_errors=True)


def usage_bytes(ctx: Context, account_name: str, share: str) -> int:
    root = share_dir(ctx, account_name, share)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def register(router: Router, ctx: Context) -> None:
    def account_or_404(request: Request, action: str, sub: str, rg: str, name: str, sid: str):
        subscription_id_or_404(ctx, sub)
        account_id = provider_id(ctx, rg, NAMESPACE, "storageAccounts", name)
        require(ctx, request.state.caller, action, sid or account_id)
        resource_group_or_404(ctx, sub, rg)
        return resource_or_404(ctx, account_id, ACCOUNT_TYPE, name, rg)

    def scope(rg: str, name: str, share: str) -> str:
        return provider_id(
            ctx, rg, NAMESPACE, "storageAccounts", name, "fileServices", "default", "shares", share
        )

    def with_usage(account: dict[str, Any], share: dict[str, Any]) -> dict[str, Any]:
        share["properties"]["shareUsageBytes"] = usage_bytes(ctx, account["name"], share["name"])
        return share

    async def put_share(request: Request, sub: str, rg: str, name: str, share: str):
        require_api_version(request)
        account = account_or_404(request, WRITE, sub, rg, name, scope(rg, name, share))
        if not name_is_valid(share):
            raise bad_request(
                "InvalidResourceName",
                "The specifed resource name contains invalid characters.",
            )
        properties = (await json_body(request)).get("properties") or {}
        body, created = create_or_update(ctx, account, share, properties)
        return json_response(body, 201 if created else 200)

    async def patch_share(request: Request, sub: str, rg: str, name: str, share: str):
        require_api_version(request)
        account = account_or_404(request, WRITE, sub, rg, name, scope(rg, name, share))
        if get(ctx, account, share) is None:
            raise not_found("ShareNotFound", "The specified share does not exist.")
        properties = (await json_body(request)).get("properties") or {}
        body, _ = create_or_update(ctx, account, share, properties)
        return json_response(body)

    async def get_share(request: Request, sub: str, rg: str, name: str, share: str):
        require_api_version(request)
        account = account_or_404(request, READ, sub, rg, name, scope(rg, name, share))
        found = get(ctx, account, share)
        if found is None:
            raise not_found("ShareNotFound", "The specified share does not exist.")
        return json_response(with_usage(account, found))

    async def delete_share(request: Request, sub: str, rg: str, name: str, share: str):
        require_api_version(request)
        account = account_or_404(request, DELETE, sub, rg, name, scope(rg, name, share))
        return empty(200 if delete(ctx, account, share) else 204)

    async def list_all(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        account = account_or_404(request, READ, sub, rg, name, "")
        return json_response(list_page(list_shares(ctx, account)))

    one = (
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/"
        "{name}/fileServices/default/shares"
    )
    router.add("GET", one, list_all)
    router.add("PUT", one + "/{share}", put_share)
    router.add("PATCH", one + "/{share}", patch_share)
    router.add("GET", one + "/{share}", get_share)
    router.add("DELETE", one + "/{share}", delete_share)
