"""Who may call the Blob data plane, as Azure Storage decides it.

- ``Authorization: SharedKey <account>:<signature>``: the HMAC-SHA256, under one of the
  account's keys, of the string Azure signs (verb, the standard headers, the canonicalized
  ``x-ms-*`` headers and the canonicalized resource). A wrong signature is 403
  ``AuthenticationFailed``; an account with ``allowSharedKeyAccess: false`` refuses keys with 403
  ``KeyBasedAuthenticationNotPermitted``.
- ``Authorization: Bearer <token>``: an Entra token for ``https://storage.azure.com``; the caller
  then needs the operation's action or data action through a role assignment at the blob, its
  container, the account or above (Storage Blob Data Reader/Contributor/Owner). Without it: 403
  ``AuthorizationPermissionMismatch``.
- Nothing: 401 ``NoAuthenticationInformation`` with the bearer challenge the SDK follows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import unquote

from starlette.requests import Request

from localazure.authorization.access import is_allowed
from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.core.shared_key import SIGNED_HEADERS
from localazure.storage import STORAGE_AUDIENCE
from localazure.storage.accounts import account_keys, shared_key_allowed


class StorageAuthError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.detail, self.headers = detail, headers or {}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: an account key holder (``object_id`` None) or an Entra
    principal."""

    object_id: str | None

    def __str__(self) -> str:
        return self.object_id or "SharedKey"


def _header_sort_key(name: str) -> tuple[str, str]:
    # The service compares header names with a culture-aware collation in which '-' weighs
    # nothing at first; this reproduces it for the names clients send.
    return name.replace("-", ""), name


def string_to_sign(request: Request, account: str) -> str:
    headers = request.headers
    values = []
    for name in SIGNED_HEADERS:
        value = headers.get(name, "")
        if name == "content-length" and value == "0":
            value = ""
        values.append(value)
    x_ms = sorted(
        ((k.lower(), v.strip()) for k, v in headers.items() if k.lower().startswith("x-ms-")),
        key=lambda item: _header_sort_key(item[0]),
    )
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in x_ms)
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    resource = f"/{account}{raw_path.decode('latin-1').split('?', 1)[0]}"
    grouped: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        grouped.setdefault(key.lower(), []).append(unquote(value))
    query = "".join(f"\n{k}:{','.join(sorted(v))}" for k, v in sorted(grouped.items()))
    return request.method + "\n" + "\n".join(values) + "\n" + canonical_headers + resource + query


def _sign(key: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _challenge(ctx: Context) -> dict[str, str]:
    return {
        "WWW-Authenticate": f"Bearer authorization_uri={ctx.endpoint}/{ctx.settings.tenant_id}"
        f"/oauth2/authorize resource_id={STORAGE_AUDIENCE}"
    }


def authenticate(ctx: Context, request: Request, account: dict) -> Principal:
    authorization = request.headers.get("authorization") or ""
    scheme, _, credential = authorization.partition(" ")
    if not authorization:
        raise StorageAuthError(
            401,
            "NoAuthenticationInformation",
            "Server failed to authenticate the request. Please refer to the information in the "
            "www-authenticate header.",
            headers=_challenge(ctx),
        )
    if scheme == "SharedKey":
        name, _, signature = credential.partition(":")
        if name.lower() != account["name"].lower():
            raise _signature_mismatch(signature, "(the key of another account)")
        if not shared_key_allowed(account):
            raise StorageAuthError(
                403,
                "KeyBasedAuthenticationNotPermitted",
                "Key based authentication is not permitted on this storage account.",
            )
        text = string_to_sign(request, name)
        for key in account_keys(ctx, account["id"]).values():
            if hmac.compare_digest(_sign(key, text), signature):
                return Principal(None)
        raise _signature_mismatch(signature, text)
    if scheme.lower() == "bearer":
        try:
            caller = ctx.issuer.verify(authorization, (STORAGE_AUDIENCE,))
        except AzureError as err:
            raise StorageAuthError(
                401,
                "InvalidAuthenticationInfo",
                "Server failed to authenticate the request. Please refer to the information in "
                "the www-authenticate header.",
                detail=err.message,
                headers=_challenge(ctx),
            ) from None
        return Principal(caller.object_id)
    raise StorageAuthError(
        400,
        "InvalidAuthenticationInfo",
        "Authentication information is not given in the correct format. Check the value of "
        "Authorization header.",
    )


def _signature_mismatch(signature: str, text: str) -> StorageAuthError:
    return StorageAuthError(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization header "
        "is formed correctly including the signature.",
        detail=f"The MAC signature found in the HTTP request '{signature}' is not the same as any "
        f"computed signature. Server used following string to sign: '{text}'.",
    )


def authorize(ctx: Context, principal: Principal, action: str, scope: str, *, data: bool) -> None:
    """Key holders may do everything; an Entra caller needs ``action`` (a data action when
    ``data``) at ``scope`` or above."""
    if principal.object_id is None:
        return
    if not is_allowed(ctx, principal.object_id, action, scope, data=data):
        raise StorageAuthError(
            403,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        )
