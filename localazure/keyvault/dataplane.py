"""The secrets data plane at ``<vault>.vault.azure.net`` (api-versions 7.0 to 7.6 and 2025-07-01): set, get (current or
one version), update properties, list secrets and versions (properties only, never values),
delete, deleted secrets, recover and purge.

Authentication is Key Vault's challenge: a request without a usable token gets 401 with
``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
resource="https://vault.azure.net"``; the client then asks its identity for a token for that
resource and repeats the request. Authorization follows the vault's model: with
``enableRbacAuthorization`` the caller needs a role whose *data actions* include the operation
(Key Vault Secrets User: get and read metadata; Secrets Officer and Administrator: everything;
Owner and Contributor have no data actions), otherwise an access policy of the vault must grant
the secret permission to the caller's object id.

Values are read from the request body and written to the response only: the request log keeps
the path (the secret's name) and never a body.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.authorization.access import is_allowed
from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.core.http import empty, json_body, json_response
from localazure.core.router import Router
from localazure.core.tokens import Caller
from localazure.keyvault import AUDIENCE, VAULT_SUFFIX, VAULT_TYPE, models, state
from localazure.keyvault.models import data_error

_SECRETS = f"{VAULT_TYPE}/secrets"
DATA_ACTIONS = {
    "get": f"{_SECRETS}/getSecret/action",
    "list": f"{_SECRETS}/readMetadata/action",
    "set": f"{_SECRETS}/setSecret/action",
    "delete": f"{_SECRETS}/delete",
    "recover": f"{_SECRETS}/recover/action",
    "purge": f"{_SECRETS}/purge/action",
}
SUPPORTED_API_VERSIONS = (
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
)
MAX_VALUE_BYTES = 25 * 1024


def challenge_header(tenant_id: str) -> str:
    return (
        f'Bearer authorization="https://login.microsoftonline.com/{tenant_id}", '
        f'resource="{AUDIENCE}"'
    )


def _api_version(request: Request) -> str:
    version = request.query_params.get("api-version")
    if not version:
        raise data_error(400, "BadParameter", "The 'api-version' query parameter is missing.")
    if version not in SUPPORTED_API_VERSIONS:
        raise data_error(
            400,
            "BadParameter",
            f"The specified version ({version}) is not recognized. Consider using the latest "
            f"supported version ({SUPPORTED_API_VERSIONS[-1]}).",
        )
    return version


class SecretsPlane:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    # -- who and where ----------------------------------------------------------------------

    def vault_of(self, host: str) -> dict[str, Any]:
        name = host.removesuffix(VAULT_SUFFIX)
        for vault in self.ctx.store.list_resources(type=VAULT_TYPE):
            if vault["name"].lower() == name.lower():
                return vault
        raise data_error(
            404,
            "VaultNotFound",
            f"No vault '{name}' exists (on Azure the host name {host} would not resolve).",
        )

    def authenticate(self, request: Request) -> Caller:
        header = request.headers.get("authorization")
        unauthorized = {"WWW-Authenticate": challenge_header(self.ctx.settings.tenant_id)}
        if not header:
            raise models.KeyVaultError(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                headers=unauthorized,
            )
        try:
            caller = self.ctx.issuer.verify(header, (AUDIENCE,))
        except AzureError as err:
            raise models.KeyVaultError(
                401, "Unauthorized", f"AKV10022: {err.message}", headers=unauthorized
            ) from None
        request.state.caller = caller
        return caller

    def authorize(
        self, vault: dict[str, Any], caller: Caller, permission: str, name: str | None
    ) -> None:
        props = vault["properties"]
        where = f"{vault['name']};location={vault['location']}"
        identity = f"appid={caller.app_id};oid={caller.object_id};iss={self.ctx.issuer.issuer}"
        if props.get("enableRbacAuthorization"):
            action = DATA_ACTIONS[permission]
            scope = f"{vault['id']}/secrets/{name}" if name else vault["id"]
            if is_allowed(self.ctx, caller.object_id, action, scope, data=True):
                return
            raise data_error(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource.\r\nIf role "
                "assignments, deny assignments or role definitions were changed recently, please "
                f"observe propagation time.\r\nCaller: {identity}\r\nAction: '{action}'\r\n"
                f"Resource: '{scope.lower()}'\r\nAssignment: (not found)\r\n"
                f"DenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {where}\r\n",
                "ForbiddenByRbac",
            )
        for policy in props.get("accessPolicies") or []:
            if policy["objectId"].lower() != caller.object_id.lower():
                continue
            if policy.get("applicationId") and policy["applicationId"] != caller.app_id:
                continue
            granted = policy.get("permissions", {}).get("secrets") or []
            if permission in granted or "all" in granted:
                return
        raise data_error(
            403,
            "Forbidden",
            f"The user, group or application '{identity}' does not have secrets {permission} "
            f"permission on key vault '{where}'. For help resolving this issue, please see "
            "https://go.microsoft.com/fwlink/?linkid=2125287",
            "AccessDenied",
        )

    async def enter(
        self, request: Request, host: str, permission: str, name: str | None = None
    ) -> tuple[dict[str, Any], str, int]:
        """Authenticate, find the vault, check the name and the permission; return the vault,
        the base URL of its ids and its retention in days."""
        caller = self.authenticate(request)
        _api_version(request)
        vault = self.vault_of(host)
        if name is not None:
            models.check_secret_name(name)
        self.authorize(vault, caller, permission, name)
        base = models.vault_uri(vault["name"]).rstrip("/")
        return vault, base, vault["properties"].get("softDeleteRetentionInDays", 90)

    # -- lookups ----------------------------------------------------------------------------

    def live_head(self, vault: str, name: str) -> dict[str, Any]:
        head = state.head(self.ctx, vault, name)
        if head is None or head.get("deleted"):
            raise models.secret_not_found(name)
        return head

    def deleted_head(self, vault: str, name: str) -> dict[str, Any]:
        head = state.head(self.ctx, vault, name)
        if head is None or not head.get("deleted"):
            raise models.deleted_secret_not_found(name)
        return head

    def version_or_404(self, vault: str, name: str, version: str) -> dict[str, Any]:
        record = state.version(self.ctx, vault, name, version)
        if record is None:
            raise data_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name}/{version} was not found in this key vault.",
            )
        return record


def register(router: Router, ctx: Context) -> None:
    plane = SecretsPlane(ctx)

    async def set_secret(request: Request, login_host: str, name: str) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "set", name)
        body = await json_body(request)
        value = body.get("value")
        if not isinstance(value, str):
            raise data_error(400, "BadParameter", "Property 'value' is required (a string).")
        if len(value.encode("utf-8")) > MAX_VALUE_BYTES:
            raise data_error(400, "BadParameter", "A secret value may be at most 25 KB.")
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or len(tags) > 15:
            raise data_error(400, "BadParameter", "'tags' must be an object of at most 15 tags.")
        head = state.head(ctx, vault["name"], name)
        if head and head.get("deleted"):
            raise data_error(
                409,
                "Conflict",
                f"Secret {name} is currently in a deleted but recoverable state, and its name "
                "cannot be reused; in this state, the secret can only be recovered or purged.",
                "ObjectIsDeletedButRecoverable",
            )
        record = state.add_version(
            ctx,
            vault["name"],
            name,
            value,
            content_type=body.get("contentType"),
            tags={str(k): str(v) for k, v in tags.items()},
            attributes=models.requested_attributes(body),
        )
        return json_response(models.secret_bundle(base, record["name"], record, retention, value))

    async def get_secret(
        request: Request, login_host: str, name: str, version: str = ""
    ) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "get", name)
        head = plane.live_head(vault["name"], name)
        record = plane.version_or_404(vault["name"], name, version or head["current"])
        if not record["enabled"]:
            raise data_error(
                403,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
                "SecretDisabled",
            )
        value = state.value_of(ctx, vault["name"], record)
        return json_response(models.secret_bundle(base, head["name"], record, retention, value))

    async def update_secret(
        request: Request, login_host: str, name: str, version: str = ""
    ) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "set", name)
        head = plane.live_head(vault["name"], name)
        record = plane.version_or_404(vault["name"], name, version or head["current"])
        body = await json_body(request)
        changes: dict[str, Any] = dict(models.requested_attributes(body))
        if "contentType" in body:
            changes["contentType"] = body["contentType"]
        if body.get("tags") is not None:
            changes["tags"] = {str(k): str(v) for k, v in body["tags"].items()}
        record = state.update_version(ctx, vault["name"], record, changes)
        return json_response(models.secret_bundle(base, head["name"], record, retention, None))

    async def list_secrets(request: Request, login_host: str) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "list")
        items = []
        for head in state.heads(ctx, vault["name"]):
            if head.get("deleted"):
                continue
            record = state.version(ctx, vault["name"], head["name"], head["current"])
            if record:
                items.append(
                    models.secret_item(base, head["name"], record, retention, versioned=False)
                )
        return json_response({"value": items, "nextLink": None})

    async def list_versions(request: Request, login_host: str, name: str) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "list", name)
        head = plane.live_head(vault["name"], name)
        items = [
            models.secret_item(base, head["name"], record, retention, versioned=True)
            for record in state.versions(ctx, vault["name"], name)
        ]
        return json_response({"value": items, "nextLink": None})

    async def delete_secret(request: Request, login_host: str, name: str) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "delete", name)
        head = plane.live_head(vault["name"], name)
        record = state.version(ctx, vault["name"], name, head["current"])
        head = state.mark_deleted(ctx, vault["name"], name, retention)
        return json_response(
            models.deleted_secret(base, head["name"], record, retention, head["deleted"])
        )

    async def list_deleted(request: Request, login_host: str) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "list")
        items = []
        for head in state.heads(ctx, vault["name"]):
            if not head.get("deleted"):
                continue
            record = state.version(ctx, vault["name"], head["name"], head["current"])
            if record:
                entry = models.deleted_secret(
                    base, head["name"], record, retention, head["deleted"]
                )
                entry["id"] = models.secret_id(base, head["name"])
                items.append(entry)
        return json_response({"value": items, "nextLink": None})

    async def get_deleted(request: Request, login_host: str, name: str) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "list", name)
        head = plane.deleted_head(vault["name"], name)
        record = state.version(ctx, vault["name"], name, head["current"])
        return json_response(
            models.deleted_secret(base, head["name"], record, retention, head["deleted"])
        )

    async def recover_deleted(request: Request, login_host: str, name: str) -> Response:
        vault, base, retention = await plane.enter(request, login_host, "recover", name)
        head = plane.deleted_head(vault["name"], name)
        head = state.recover(ctx, vault["name"], name)
        record = state.version(ctx, vault["name"], name, head["current"])
        return json_response(models.secret_bundle(base, head["name"], record, retention, None))

    async def purge_deleted(request: Request, login_host: str, name: str) -> Response:
        vault, _base, _retention = await plane.enter(request, login_host, "purge", name)
        plane.deleted_head(vault["name"], name)
        if vault["properties"].get("enablePurgeProtection"):
            raise data_error(
                403,
                "Forbidden",
                f"Operation 'purge' is not allowed: the vault '{vault['name']}' has purge "
                "protection enabled.",
                "PurgeProtectionEnabled",
            )
        state.purge(ctx, vault["name"], name)
        return empty(204)

    async def unknown(request: Request, login_host: str, rest: str) -> Response:
        plane.authenticate(request)
        raise data_error(
            404, "NotFound", f"The operation {request.method} {rest} is not known to Key Vault."
        )

    router.add("GET", "/secrets", list_secrets, auth="custom")
    router.add("GET", "/secrets/{name}/versions", list_versions, auth="custom")
    router.add("PUT", "/secrets/{name}", set_secret, auth="custom")
    router.add("GET", "/secrets/{name}", get_secret, auth="custom")
    router.add("DELETE", "/secrets/{name}", delete_secret, auth="custom")
    router.add("GET", "/secrets/{name}/{version}", get_secret, auth="custom")
    router.add("PATCH", "/secrets/{name}/{version}", update_secret, auth="custom")
    router.add("PATCH", "/secrets/{name}", update_secret, auth="custom")
    router.add("GET", "/deletedsecrets", list_deleted, auth="custom")
    router.add("GET", "/deletedsecrets/{name}", get_deleted, auth="custom")
    router.add("DELETE", "/deletedsecrets/{name}", purge_deleted, auth="custom")
    router.add("POST", "/deletedsecrets/{name}/recover", recover_deleted, auth="custom")
    router.add("GET,PUT,POST,PATCH,DELETE,HEAD", "{rest:path}", unknown, auth="custom")
