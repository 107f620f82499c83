"""ACR's own tokens: refresh tokens (bound to an Entra principal) and access tokens (carrying the
granted access list), both JWTs signed by a key the emulator keeps in its state directory.

``scope`` strings follow the Docker token protocol: ``repository:<name>:pull,push`` or
``registry:catalog:*``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from localazure.core.context import Context

ISSUER = "Azure Container Registry"
REFRESH_TOKEN_LIFETIME_S = 3 * 3600
ACCESS_TOKEN_LIFETIME_S = 75 * 60
KEY_FILE = "acr-token-key"
_KEYS: dict[Path, bytes] = {}


class TokenError(Exception):
    pass


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """Parse every scope in ``values`` (each may hold several, space-separated)."""
    scopes = []
    for value in values:
        for item in value.split():
            parts = item.split(":")
            if len(parts) < 3:
                continue
            actions = tuple(a for a in parts[-1].split(",") if a)
            name = ":".join(parts[1:-1])
            if parts[0] == "repository":
                name = name.lower()
            scopes.append(Scope(parts[0], name, actions))
    return scopes


def grant(scopes: list[Scope], allowed: Callable[[Scope, str], bool]) -> list[dict[str, Any]]:
    """The access list for ``scopes``: each scope with the subset of its actions allowed."""
    access = []
    for scope in scopes:
        actions = [action for action in scope.actions if allowed(scope, action)]
        if actions:
            access.append({"type": scope.type, "name": scope.name, "actions": actions})
    return access


def covers(access: list[dict[str, Any]], type_: str, name: str, action: str) -> bool:
    for entry in access:
        if entry["type"] != type_ or entry["name"].lower() != name.lower():
            continue
        if action in entry["actions"] or "*" in entry["actions"]:
            return True
    return False


def _signing_key(ctx: Context) -> bytes:
    path = ctx.settings.state_dir / KEY_FILE
    if path not in _KEYS:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(secrets.token_bytes(32))
            path.chmod(0o600)
        _KEYS[path] = path.read_bytes()
    return _KEYS[path]


def ensure_signing_key(ctx: Context) -> None:
    _signing_key(ctx)


def _payload_segment(token: str) -> str:
    return token.split(".")[1]


def _encode(ctx: Context, claims: dict[str, Any]) -> str:
    # azure-containerregistry reads a refresh token's expiry with base64.b64decode (the standard
    # alphabet, not the URL-safe one), which silently drops "-" and "_"; vary a filler claim until
    # the payload segment has neither, so that the client reads the claims it was given.
    for attempt in range(256):
        claims["nonce"] = attempt
        token = jwt.encode(claims, _signing_key(ctx), algorithm="HS256")
        segment = _payload_segment(token)
        if "-" not in segment and "_" not in segment:
            return token
    return token


def _decode(ctx: Context, token: str, audience: str, grant_type: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            _signing_key(ctx),
            algorithms=["HS256"],
            audience=audience.lower(),
            issuer=ISSUER,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.PyJWTError as err:
        raise TokenError(str(err)) from None
    if claims.get("grant_type") != grant_type:
        raise TokenError(f"not a {grant_type} token")
    return claims


def _base_claims(login_server: str, subject: str, lifetime: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "jti": str(uuid.uuid4()),
        "sub": subject,
        "nbf": now - 60,
        "exp": now + lifetime,
        "iat": now,
        "iss": ISSUER,
        "aud": login_server.lower(),
        "version": "1.0",
        "rid": uuid.uuid4().hex,
    }


def issue_refresh_token(
    ctx: Context, login_server: str, object_id: str, tenant_id: str, app_id: str
) -> str:
    claims = _base_claims(login_server, object_id, REFRESH_TOKEN_LIFETIME_S)
    claims.update(
        {
            "grant_type": "refresh_token",
            "appid": app_id,
            "tenant": tenant_id,
            "permissions": {"actions": ["read", "write", "delete"], "notActions": []},
            "roles": [],
        }
    )
    return _encode(ctx, claims)


def verify_refresh_token(ctx: Context, token: str, login_server: str) -> dict[str, Any]:
    return _decode(ctx, token, login_server, "refresh_token")


def issue_access_token(
    ctx: Context, login_server: str, subject: str, access: list[dict[str, Any]]
) -> str:
    claims = _base_claims(login_server, subject, ACCESS_TOKEN_LIFETIME_S)
    claims.update({"grant_type": "access_token", "access": access, "roles": []})
    return _encode(ctx, claims)


def verify_access_token(ctx: Context, token: str, login_server: str) -> dict[str, Any]:
    return _decode(ctx, token, login_server, "access_token")
