"""The registry data plane at ``<name>.azurecr.io``: Docker Registry v2 (``/v2/...``), ACR's
metadata API (``/acr/v1/...``) and ACR's OAuth2 endpoints (``/oauth2/exchange``,
``/oauth2/token``), with ACR's authorization rules and error shapes.

Authentication, as ACR does it: a request without a usable credential gets 401 with a
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` challenge; the client exchanges an
Entra access token for an ACR refresh token, then the refresh token for an access token listing
the granted scope. Pull and metadata reads need a role that includes
``Microsoft.ContainerRegistry/registries/pull/read`` (AcrPull, Reader, ...) at the registry or a
parent scope; push needs ``.../push/write``; delete needs ``.../artifacts/delete``. The admin user
(HTTP Basic with the registry's admin credentials) may do everything; anonymous clients may pull
only when the registry has ``anonymousPullEnabled``.

Repository names have several segments (``a/b``), so routes use regular expressions of their own.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import Response

from localazure.acr import images, permissions, tokens
from localazure.acr.registries import admin_credentials_match
from localazure.acr.tokens import Scope
from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.core.router import Router
from localazure.core.tokens import ARM_AUDIENCES
from localazure.identity import principals

ACR_AUDIENCE = "https://containerregistry.azure.net"
# A refresh token used as a password (``az acr login --expose-token``) comes with this user name.
TOKEN_USER = "00000000-0000-0000-0000-000000000000"
_ANONYMOUS_ACTIONS = ("pull", "metadata_read")
_AUTH_MESSAGE = (
    "authentication required, visit https://aka.ms/acr/authorization for more information."
)
_API_HEADER = {"Docker-Distribution-Api-Version": "registry/2.0"}
_REPO = r"(?P<repo>[^?]+?)"
_WRITABLE_ATTRIBUTES = {
    "deleteEnabled": True,
    "writeEnabled": True,
    "readEnabled": True,
    "listEnabled": True,
}


class RegistryError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.detail, self.headers = detail, headers or {}

    def response(self) -> Response:
        body = {"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]}
        return _json(body, self.status, self.headers)


@dataclass(frozen=True)
class Principal:
    """Who calls the registry: ``admin`` (Basic with admin credentials), ``identity`` (an Entra
    object id, from a refresh token), ``token`` (an ACR access token) or ``anonymous``."""

    kind: str
    subject: str
    access: list[dict[str, Any]] = field(default_factory=list)


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        headers={**_API_HEADER, **(headers or {})},
        media_type="application/json; charset=utf-8",
    )


def _accepted(body: Any = None) -> Response:
    if body is None:
        return Response(b"", status_code=202, headers=_API_HEADER)
    return _json(body, 202)


def _unauthorized(
    login_host: str, scope: Scope | None, message: str = _AUTH_MESSAGE
) -> RegistryError:
    challenge = f'Bearer realm="https://{login_host}/oauth2/token",service="{login_host}"'
    detail = None
    if scope is not None:
        challenge += f',scope="{scope}"'
        detail = [{"Type": scope.type, "Name": scope.name, "Action": a} for a in scope.actions]
    return RegistryError(401, "UNAUTHORIZED", message, detail, {"WWW-Authenticate": challenge})


def _name_unknown(repository: str) -> RegistryError:
    return RegistryError(
        404, "NAME_UNKNOWN", "repository name not known to registry", {"name": repository}
    )


def _acr_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    async def wrapper(request: Request, **params: str) -> Response:
        try:
            return await handler(request, **params)
        except RegistryError as err:
            return err.response()

    return wrapper


def _form(raw: bytes) -> dict[str, list[str]]:
    return parse_qs(raw.decode(), keep_blank_values=True)


def _first(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key) or [""]
    return values[0]


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        username, _, password = base64.b64decode(value).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return username, password


def _page(
    items: list[Any], key: Callable[[Any], str], request: Request, default_n: int
) -> tuple[list[Any], int, bool]:
    """Apply Docker's ``n``/``last`` paging to ``items`` (already in their final order)."""
    try:
        n = int(request.query_params.get("n") or default_n)
    except ValueError:
        raise RegistryError(
            400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested"
        ) from None
    n = max(1, n)
    last = request.query_params.get("last")
    if last:
        names = [key(item) for item in items]
        items = (
            items[names.index(last) + 1 :] if last in names else [i for i in items if key(i) > last]
        )
    return items[:n], n, len(items) > n


def _link(path: str, last: str, n: int, orderby: str | None = "") -> dict[str, str]:
    query = f"last={quote(last, safe='')}&n={n}"
    if orderby is not None:
        query += f"&orderby={orderby}"
    return {"Link": f'<{path}?{query}>; rel="next"'}


def _ordered(items: list[dict[str, Any]], orderby: str, key: str) -> list[dict[str, Any]]:
    if orderby.lower() == "timedesc":
        return sorted(items, key=lambda i: i["lastUpdateTime"], reverse=True)
    if orderby.lower() == "timeasc":
        return sorted(items, key=lambda i: i["lastUpdateTime"])
    return sorted(items, key=lambda i: i[key])


def register(router: Router, ctx: Context) -> None:
    arm_audiences = (*ARM_AUDIENCES, ctx.endpoint)
    exchange_audiences = (*arm_audiences, ACR_AUDIENCE)

    # -- who may do what ------------------------------------------------------------------------

    def registry_for(login_host: str) -> dict[str, Any]:
        registry = images.find_registry_by_login_server(ctx, login_host)
        if registry is None:
            raise RegistryError(404, "NAME_UNKNOWN", f"registry {login_host} not found")
        return registry

    def check_service(service: str, login_host: str) -> None:
        if service and service.lower() != login_host.lower():
            raise RegistryError(
                400,
                "INVALID_REQUEST",
                f"the service '{service}' does not match this registry '{login_host}'",
            )

    def permits(registry: dict[str, Any], principal: Principal) -> Callable[[Scope, str], bool]:
        if principal.kind == "admin":
            return lambda scope, action: True
        if principal.kind == "anonymous":
            anonymous_ok = bool(registry["properties"].get("anonymousPullEnabled"))
            return lambda scope, action: (
                anonymous_ok and scope.type == "repository" and action in _ANONYMOUS_ACTIONS
            )

        def by_role(scope: Scope, action: str) -> bool:
            def can(operation: str) -> bool:
                return permissions.permits(ctx, principal.subject, operation, registry["id"])

            if scope.type == "registry":
                return scope.name == "catalog" and can("catalog")
            if scope.type != "repository":
                return False
            if action == "*":
                return all(can(a) for a in ("pull", "push", "delete"))
            return action in permissions.GRANTS and action != "catalog" and can(action)

        return by_role

    def basic_principal(registry: dict[str, Any], username: str, password: str) -> Principal | None:
        if admin_credentials_match(ctx, registry, username, password):
            return Principal("admin", f"admin:{registry['name']}")
        if username == TOKEN_USER:
            try:
                claims = tokens.verify_refresh_token(
                    ctx, password, registry["properties"]["loginServer"]
                )
            except tokens.TokenError:
                return None
            return Principal("identity", claims["sub"])
        return None

    def caller(
        request: Request, registry: dict[str, Any], login_host: str, scope: Scope | None = None
    ) -> Principal:
        authorization = request.headers.get("authorization")
        if not authorization:
            return Principal("anonymous", "anonymous")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic":
            credentials = _basic(request)
            principal = basic_principal(registry, *credentials) if credentials else None
            if principal is None:
                raise _unauthorized(login_host, scope)
            return principal
        if scheme.lower() == "bearer":
            try:
                claims = tokens.verify_access_token(ctx, value.strip(), login_host)
            except tokens.TokenError:
                raise _unauthorized(login_host, scope) from None
            return Principal("token", claims["sub"], claims.get("access") or [])
        raise _unauthorized(login_host, scope)

    def authorize(
        request: Request, login_host: str, type_: str, name: str, action: str
    ) -> dict[str, Any]:
        """Check the caller may do ``action`` on ``type_:name``; return the registry."""
        registry = registry_for(login_host)
        scope = Scope(type_, name, (action,))
        principal = caller(request, registry, login_host, scope)
        if principal.kind == "token":
            allowed = tokens.covers(principal.access, type_, name, action)
        else:
            allowed = permits(registry, principal)(scope, action)
        if not allowed:
            raise _unauthorized(login_host, scope)
        request.state.caller = principal.subject
        return registry

    def repository_name(repo: str) -> str:
        name = repo.lower()
        if not images.REPOSITORY_NAME.match(name):
            raise RegistryError(400, "NAME_INVALID", "invalid repository name", {"name": repo})
        return name

    def repository_or_404(registry: dict[str, Any], repo: str) -> dict[str, Any]:
        found = images.get_repository(ctx, registry["id"], repo)
        if found is None:
            raise _name_unknown(repo)
        return found

    # -- OAuth2 ---------------------------------------------------------------------------------

    async def exchange(request: Request, login_host: str) -> Response:
        registry = registry_for(login_host)
        form = _form(await request.body())
        check_service(_first(form, "service"), login_host)
        grant_type = _first(form, "grant_type")
        if grant_type not in ("access_token", "access_token_refresh_token"):
            raise RegistryError(
                400, "UNSUPPORTED", f"grant_type '{grant_type}' is not supported by this endpoint"
            )
        policy = registry["properties"]["policies"].get("azureADAuthenticationAsArmPolicy", {})
        arm_tokens_ok = policy.get("status", "enabled") == "enabled"
        audiences = exchange_audiences if arm_tokens_ok else (ACR_AUDIENCE,)
        try:
            entra = ctx.issuer.verify(f"Bearer {_first(form, 'access_token')}", audiences)
        except AzureError as err:
            raise _unauthorized(login_host, None, f"{_AUTH_MESSAGE} {err.message}") from None
        request.state.caller = entra.object_id
        refresh = tokens.issue_refresh_token(
            ctx, login_host, entra.object_id, entra.tenant_id, entra.app_id
        )
        return _json({"refresh_token": refresh})

    def access_token_for(
        registry: dict[str, Any], login_host: str, principal: Principal, scopes: list[str]
    ) -> Response:
        access = tokens.grant(tokens.parse_scopes(scopes), permits(registry, principal))
        token = tokens.issue_access_token(ctx, login_host, principal.subject, access)
        return _json({"access_token": token})

    def password_principal(
        registry: dict[str, Any], login_host: str, username: str, password: str
    ) -> Principal:
        if username or password:
            principal = basic_principal(registry, username, password)
            if principal is None:
                raise _unauthorized(login_host, None)
            return principal
        if not registry["properties"].get("anonymousPullEnabled"):
            raise _unauthorized(login_host, None)
        return Principal("anonymous", "anonymous")

    async def token(request: Request, login_host: str) -> Response:
        registry = registry_for(login_host)
        form = _form(await request.body())
        check_service(_first(form, "service"), login_host)
        grant_type = _first(form, "grant_type")
        if grant_type == "refresh_token":
            try:
                claims = tokens.verify_refresh_token(ctx, _first(form, "refresh_token"), login_host)
            except tokens.TokenError:
                raise _unauthorized(login_host, None) from None
            if principals.get(ctx, claims["sub"]) is None:
                raise _unauthorized(login_host, None)
            principal = Principal("identity", claims["sub"])
        elif grant_type == "password":
            username, password = _basic(request) or (
                _first(form, "username"),
                _first(form, "password"),
            )
            principal = password_principal(registry, login_host, username, password)
        else:
            raise RegistryError(400, "UNSUPPORTED", f"grant_type '{grant_type}' is not supported")
        request.state.caller = principal.subject
        return access_token_for(registry, login_host, principal, form.get("scope", []))

    async def token_get(request: Request, login_host: str) -> Response:
        """Docker's token request: ``GET /oauth2/token?service=&scope=`` with Basic or nothing."""
        registry = registry_for(login_host)
        check_service(request.query_params.get("service", ""), login_host)
        credentials = _basic(request)
        if request.headers.get("authorization") and credentials is None:
            raise _unauthorized(login_host, None)
        principal = password_principal(registry, login_host, *(credentials or ("", "")))
        request.state.caller = principal.subject
        scopes = request.query_params.getlist("scope")
        return access_token_for(registry, login_host, principal, scopes)

    # -- Docker Registry v2 ---------------------------------------------------------------------

    async def base(request: Request, login_host: str) -> Response:
        registry = registry_for(login_host)
        principal = caller(request, registry, login_host)
        if principal.kind == "anonymous":
            raise _unauthorized(login_host, None)
        request.state.caller = principal.subject
        return _json({})

    async def catalog_v2(request: Request, login_host: str) -> Response:
        registry = authorize(request, login_host, "registry", "catalog", "*")
        names = [r["name"] for r in images.list_repositories(ctx, registry["id"])]
        page, n, more = _page(names, lambda name: name, request, 100)
        headers = _link("/v2/_catalog", page[-1], n, orderby=None) if more else {}
        return _json({"repositories": page}, headers=headers)

    async def tags_v2(request: Request, login_host: str, repo: str) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "pull")
        repository_or_404(registry, repo)
        names = [t["name"] for t in images.list_tags(ctx, registry["id"], repo)]
        page, n, more = _page(names, lambda name: name, request, 100)
        headers = _link(f"/v2/{repo}/tags/list", page[-1], n, orderby=None) if more else {}
        return _json({"name": repo, "tags": page}, headers=headers)

    async def manifest_v2(request: Request, login_host: str, repo: str, reference: str) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "pull")
        manifest = images.find_manifest(ctx, registry["id"], repo, reference)
        if manifest is None:
            if images.get_repository(ctx, registry["id"], repo) is None:
                raise _name_unknown(repo)
            raise RegistryError(
                404,
                "MANIFEST_UNKNOWN",
                f'manifest tagged by "{reference}" is not found',
                {"Tag": reference},
            )
        body = manifest["manifest"].encode()
        headers = {
            **_API_HEADER,
            "Docker-Content-Digest": manifest["digest"],
            "ETag": f'"{manifest["digest"]}"',
            "Content-Type": manifest["mediaType"],
            "Content-Length": str(len(body)),
        }
        if request.method == "HEAD":
            return Response(b"", headers=headers)
        return Response(body, headers=headers)

    async def delete_manifest_v2(
        request: Request, login_host: str, repo: str, reference: str
    ) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "delete")
        if not images.DIGEST.match(reference):
            raise RegistryError(400, "UNSUPPORTED", "delete a manifest by its digest, not a tag")
        if images.get_manifest(ctx, registry["id"], repo, reference) is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Digest": reference})
        images.delete_manifest(ctx, registry["id"], repo, reference)
        return _accepted()

    # -- ACR metadata API -----------------------------------------------------------------------

    def tag_body(tag: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": tag["name"],
            "digest": tag["digest"],
            "createdTime": tag["createdTime"],
            "lastUpdateTime": tag["lastUpdateTime"],
            "signed": False,
            "changeableAttributes": dict(_WRITABLE_ATTRIBUTES),
        }

    def manifest_body(registry: dict[str, Any], repo: str, manifest: dict[str, Any]) -> dict:
        return {
            "digest": manifest["digest"],
            "imageSize": manifest["imageSize"],
            "createdTime": manifest["createdTime"],
            "lastUpdateTime": manifest["lastUpdateTime"],
            "architecture": manifest["architecture"],
            "os": manifest["os"],
            "mediaType": manifest["mediaType"],
            "configMediaType": manifest["configMediaType"],
            "tags": images.tags_of(ctx, registry["id"], repo, manifest["digest"]),
            "changeableAttributes": {**_WRITABLE_ATTRIBUTES, "quarantineState": "Passed"},
        }

    async def catalog_acr(request: Request, login_host: str) -> Response:
        registry = authorize(request, login_host, "registry", "catalog", "*")
        names = [r["name"] for r in images.list_repositories(ctx, registry["id"])]
        page, n, more = _page(names, lambda name: name, request, 100)
        headers = _link("/acr/v1/_catalog", page[-1], n) if more else {}
        return _json({"repositories": page}, headers=headers)

    async def repository_properties(request: Request, login_host: str, repo: str) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "metadata_read")
        found = repository_or_404(registry, repo)
        return _json(
            {
                "registry": login_host,
                "imageName": repo,
                "createdTime": found["createdTime"],
                "lastUpdateTime": found["lastUpdateTime"],
                "manifestCount": len(images.list_manifests(ctx, registry["id"], repo)),
                "tagCount": len(images.list_tags(ctx, registry["id"], repo)),
                "changeableAttributes": {**_WRITABLE_ATTRIBUTES, "teleportEnabled": False},
            }
        )

    async def delete_repository(request: Request, login_host: str, repo: str) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "delete")
        repository_or_404(registry, repo)
        digests, tags = images.delete_repository(ctx, registry["id"], repo)
        return _accepted({"manifestsDeleted": digests, "tagsDeleted": tags})

    async def list_tags(request: Request, login_host: str, repo: str) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "metadata_read")
        repository_or_404(registry, repo)
        orderby = request.query_params.get("orderby", "")
        tags = _ordered(images.list_tags(ctx, registry["id"], repo), orderby, "name")
        digest = request.query_params.get("digest")
        if digest:
            tags = [t for t in tags if t["digest"] == digest]
        page, n, more = _page(tags, lambda t: t["name"], request, 100)
        headers = _link(f"/acr/v1/{repo}/_tags", page[-1]["name"], n, orderby) if more else {}
        body = {"registry": login_host, "imageName": repo, "tags": [tag_body(t) for t in page]}
        return _json(body, headers=headers)

    async def tag_properties(request: Request, login_host: str, repo: str, tag: str) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "metadata_read")
        repository_or_404(registry, repo)
        found = images.get_tag(ctx, registry["id"], repo, tag)
        if found is None:
            raise RegistryError(
                404, "TAG_UNKNOWN", "the specified tag does not exist", {"Tag": tag}
            )
        return _json({"registry": login_host, "imageName": repo, "tag": tag_body(found)})

    async def delete_tag(request: Request, login_host: str, repo: str, tag: str) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "delete")
        if not images.delete_tag(ctx, registry["id"], repo, tag):
            raise RegistryError(
                404, "TAG_UNKNOWN", "the specified tag does not exist", {"Tag": tag}
            )
        return _accepted()

    async def list_manifests(request: Request, login_host: str, repo: str) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "metadata_read")
        repository_or_404(registry, repo)
        orderby = request.query_params.get("orderby", "")
        manifests = _ordered(images.list_manifests(ctx, registry["id"], repo), orderby, "digest")
        page, n, more = _page(manifests, lambda m: m["digest"], request, 100)
        headers = (
            _link(f"/acr/v1/{repo}/_manifests", page[-1]["digest"], n, orderby) if more else {}
        )
        body = {
            "registry": login_host,
            "imageName": repo,
            "manifests": [manifest_body(registry, repo, m) for m in page],
        }
        return _json(body, headers=headers)

    async def manifest_properties(
        request: Request, login_host: str, repo: str, digest: str
    ) -> Response:
        repo = repository_name(repo)
        registry = authorize(request, login_host, "repository", repo, "metadata_read")
        repository_or_404(registry, repo)
        manifest = images.get_manifest(ctx, registry["id"], repo, digest)
        if manifest is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "manifest unknown", {"Digest": digest})
        body = {
            "registry": login_host,
            "imageName": repo,
            "manifest": manifest_body(registry, repo, manifest),
        }
        return _json(body)

    # Specific paths first: a repository pattern would also match their suffixes.
    routes: list[tuple[str, str, Callable[..., Any]]] = [
        ("POST", "/oauth2/exchange", exchange),
        ("POST", "/oauth2/token", token),
        ("GET", "/oauth2/token", token_get),
        ("GET", "/v2", base),
        ("GET", "/v2/_catalog", catalog_v2),
        ("GET", f"/v2/{_REPO}/tags/list", tags_v2),
        ("GET,HEAD", f"/v2/{_REPO}/manifests/(?P<reference>[^/]+)", manifest_v2),
        ("DELETE", f"/v2/{_REPO}/manifests/(?P<reference>[^/]+)", delete_manifest_v2),
        ("GET", "/acr/v1/_catalog", catalog_acr),
        ("GET", f"/acr/v1/{_REPO}/_tags/(?P<tag>[^/]+)", tag_properties),
        ("DELETE", f"/acr/v1/{_REPO}/_tags/(?P<tag>[^/]+)", delete_tag),
        ("GET", f"/acr/v1/{_REPO}/_tags", list_tags),
        ("GET", f"/acr/v1/{_REPO}/_manifests/(?P<digest>[^/]+)", manifest_properties),
        ("GET", f"/acr/v1/{_REPO}/_manifests", list_manifests),
        ("GET", f"/acr/v1/{_REPO}", repository_properties),
        ("DELETE", f"/acr/v1/{_REPO}", delete_repository),
    ]
    for methods, pattern, handler in routes:
        router.add(methods, pattern, _acr_errors(handler), auth="custom")
