"""Principals of the emulated tenant: service principals (with a secret) and managed identities."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from typing import Any

from localazure.core.context import Context

KIND = "principal"
DEV_SP_OBJECT_ID = "0c1e5b3a-0000-4000-8000-00000000aa04"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def get(ctx: Context, object_id: str) -> dict[str, Any] | None:
    return ctx.store.get(KIND, object_id.lower())


def by_app_id(ctx: Context, app_id: str) -> dict[str, Any] | None:
    for principal in ctx.store.values(KIND):
        if principal["appId"].lower() == app_id.lower():
            return principal
    return None


def check_secret(principal: dict[str, Any], secret: str) -> bool:
    expected = principal.get("secretHash")
    return bool(expected) and hmac.compare_digest(expected, _hash(secret))


def create_managed_identity(ctx: Context, display_name: str, resource_id: str) -> dict[str, Any]:
    principal = {
        "objectId": str(uuid.uuid4()),
        "appId": str(uuid.uuid4()),
        "displayName": display_name,
        "type": "ManagedIdentity",
        "resourceId": resource_id,
        "tenantId": ctx.settings.tenant_id,
    }
    ctx.store.put(KIND, principal["objectId"], principal)
    return principal


def delete(ctx: Context, object_id: str) -> None:
    ctx.store.delete(KIND, object_id.lower())


def ensure_development_principal(ctx: Context) -> str:
    """Create the development service principal once; return its secret.

    The secret lives in the state directory (mode 0600), never in the store: the store keeps
    only its hash, like a directory keeps a credential's hint and not its value.
    """
    secret_file = ctx.settings.secret_file
    if secret_file.exists():
        secret = secret_file.read_text().strip()
    else:
        secret = secrets.token_urlsafe(30)
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        secret_file.write_text(secret)
        secret_file.chmod(0o600)
    ctx.store.put(
        KIND,
        DEV_SP_OBJECT_ID,
        {
            "objectId": DEV_SP_OBJECT_ID,
            "appId": ctx.settings.client_id,
            "displayName": "localazure-development",
            "type": "ServicePrincipal",
            "secretHash": _hash(secret),
            "tenantId": ctx.settings.tenant_id,
        },
    )
    return secret
