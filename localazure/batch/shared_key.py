"""Authentication of the Batch data plane: Shared Key, verified exactly as azure-batch's
``SharedKeyAuth`` signs (the string to sign is rebuilt from the request as received), or an
Entra token for the Batch audience with a role on the account.

String to sign: the method; the values of Content-Encoding, Content-Language, Content-Length,
Content-MD5, Content-Type, Date, If-Modified-Since, If-Match, If-None-Match,
If-Unmodified-Since and Range (empty when absent), one per line; every ``ocp-*`` header as
``name:value`` sorted by name; ``/<account><path>``; then each query parameter as
``\\n<name>:<first value>`` sorted by name. The signature is base64(HMAC-SHA256(base64-decoded
key, string)); either of the account's keys is accepted.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

from localazure.authorization.access import is_allowed
from localazure.batch import ACCOUNT_TYPE, BATCH_AUDIENCES, accounts
from localazure.batch.jobs import BatchError
from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.core.shared_key import SIGNED_HEADERS

MAX_CLOCK_SKEW_S = 15 * 60
READ = f"{ACCOUNT_TYPE}/read"
WRITE = f"{ACCOUNT_TYPE}/write"


def _failed(detail: str) -> BatchError:
    return BatchError(
        403,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization "
        "header is formed correctly including the signature.",
        {"AuthenticationErrorDetail": detail},
    )


def string_to_sign(request: Request, account_name: str) -> str:
    headers = {k.lower(): v for k, v in request.headers.items() if v}
    text = request.method + "\n"
    text += "\n".join(headers.get(name, "") for name in SIGNED_HEADERS) + "\n"
    for name, value in sorted((k, v) for k, v in headers.items() if "ocp-" in k):
        text += f"{name}:{value}\n"
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    text += f"/{account_name}{raw_path.decode().split('?', 1)[0]}"
    query = parse_qs(request.scope.get("query_string", b"").decode())
    for name in sorted(query):
        if query[name][0]:
            text += f"\n{name}:{query[name][0]}"
    return text


def sign(key: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(key), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _check_date(request: Request) -> None:
    stamp = request.headers.get("ocp-date") or request.headers.get("date")
    if not stamp:
        raise _failed("The request has no ocp-date or Date header.")
    try:
        sent = email.utils.parsedate_to_datetime(stamp).timestamp()
    except (TypeError, ValueError):
        raise _failed(f"The date header '{stamp}' is not an RFC 1123 date.") from None
    if abs(time.time() - sent) > MAX_CLOCK_SKEW_S:
        raise _failed(
            f"Request date header too old or too new: '{stamp}' is more than 15 minutes from "
            "the server's time."
        )


def authenticate(ctx: Context, request: Request, account: dict[str, Any]) -> str:
    """Who the request is (``SharedKey`` or the caller's object id); raise Batch's error."""
    header = request.headers.get("authorization") or ""
    scheme, _, credential = header.partition(" ")
    if scheme == "SharedKey":
        return _shared_key(ctx, request, account, credential.strip())
    if scheme.lower() == "bearer":
        return _token(ctx, request, account, header)
    raise BatchError(
        401,
        "AuthenticationFailed" if header else "MissingRequiredHeader",
        "Server failed to authenticate the request: the Authorization header is missing or "
        "uses an unsupported scheme (SharedKey or Bearer).",
        {"HeaderName": "Authorization"},
    )


def _shared_key(ctx: Context, request: Request, account: dict[str, Any], credential: str) -> str:
    if "SharedKey" not in account["properties"]["allowedAuthenticationModes"]:
        raise _failed("SharedKey authentication is not allowed for this account.")
    name, _, signature = credential.partition(":")
    if name.lower() != account["name"].lower() or not signature:
        raise _failed(f"The account name '{name}' in the Authorization header is not this account.")
    _check_date(request)
    text = string_to_sign(request, name)
    stored = accounts.keys(ctx, account)
    for key in (stored["primary"], stored["secondary"]):
        try:
            expected = sign(key, text)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, signature):
            return "SharedKey"
    raise _failed(
        f"The MAC signature found in the HTTP request '{signature}' is not the same as any "
        "computed signature."
    )


def _token(ctx: Context, request: Request, account: dict[str, Any], header: str) -> str:
    if "AAD" not in account["properties"]["allowedAuthenticationModes"]:
        raise _failed("Microsoft Entra authentication is not allowed for this account.")
    try:
        caller = ctx.issuer.verify(header, BATCH_AUDIENCES)
    except AzureError as err:
        raise BatchError(401, "AuthenticationFailed", err.message) from None
    action = READ if request.method in ("GET", "HEAD") else WRITE
    if not is_allowed(ctx, caller.object_id, action, account["id"]):
        raise BatchError(
            403,
            "InsufficientPermissions",
            f"The identity '{caller.object_id}' has no role on the Batch account that allows "
            f"'{action}'.",
        )
    return caller.object_id
