"""Docker Hub and MCR as read-only v2 registries serving the public image catalog.

Clients resolve a source image's digest here before importing it into ACR (as they would
against the real public registries): Docker Hub answers anonymous requests with a bearer
challenge pointing at its token service ``auth.docker.io``; MCR serves anonymously.
"""

from __future__ import annotations

import json
import re

from starlette.requests import Request
from starlette.responses import Response

from localazure.acr import catalog
from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.core.router import Routes

DOCKER_HUB_SERVICE = "registry.docker.io"
_MANIFEST_PATH = re.compile(r"^/v2/(?P<repository>.+)/manifests/(?P<reference>[^/]+)$")


def _docker_error(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    body = {"errors": [{"code": code, "message": message, "detail": None}]}
    return Response(json.dumps(body), status, headers=headers, media_type="application/json")


def _challenge(repository: str) -> dict[str, str]:
    return {
        "WWW-Authenticate": f'Bearer realm="https://auth.docker.io/token",'
        f'service="{DOCKER_HUB_SERVICE}",scope="repository:{repository}:pull"'
    }


def register(routes: Routes, ctx: Context) -> None:
    async def docker_hub(request: Request, login_host: str, path: str) -> Response:
        if login_host == "auth.docker.io":
            return _token(request)
        return _serve(request, catalog.DOCKER_HUB, require_token=True)

    async def mcr(request: Request, login_host: str, path: str) -> Response:
        return _serve(request, "mcr.microsoft.com", require_token=False)

    def _token(request: Request) -> Response:
        if request.url.path != "/token":
            return _docker_error(404, "NOT_FOUND", "not found")
        scope = request.query_params.get("scope", "")
        token, expires_on = ctx.issuer.issue(
            audience=DOCKER_HUB_SERVICE,
            object_id="anonymous",
            app_id=scope,
            kind="DockerHub",
            lifetime=300,
        )
        return Response(
            json.dumps({"token": token, "access_token": token, "expires_in": 300}),
            media_type="application/json",
        )

    def _serve(request: Request, registry: str, require_token: bool) -> Response:
        path = request.url.path
        if path in ("/v2", "/v2/"):
            if require_token and not _authorised(request):
                return _docker_error(401, "UNAUTHORIZED", "authentication required", _challenge(""))
            return Response("{}", media_type="application/json")
        match = _MANIFEST_PATH.match(path)
        if match is None or request.method not in ("GET", "HEAD"):
            return _docker_error(404, "NOT_FOUND", "this registry serves manifests only")
        repository, reference = match.group("repository"), match.group("reference")
        if require_token and not _authorised(request):
            return _docker_error(
                401, "UNAUTHORIZED", "authentication required", _challenge(repository)
            )
        image = catalog.find(registry, repository, reference)
        if image is None:
            if require_token and catalog.find(registry, repository, "latest") is None:
                # Docker Hub cannot tell a missing repository from a private one.
                return _docker_error(
                    401,
                    "UNAUTHORIZED",
                    "authentication required",
                    _challenge(repository),
                )
            return _docker_error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {reference}")
        headers = {
            "Docker-Content-Digest": image.digest,
            "Content-Type": catalog.MANIFEST_MEDIA_TYPE,
            "Content-Length": str(len(image.manifest.encode())),
        }
        body = b"" if request.method == "HEAD" else image.manifest.encode()
        return Response(body, headers=headers)

    def _authorised(request: Request) -> bool:
        try:
            ctx.issuer.verify(request.headers.get("authorization"), (DOCKER_HUB_SERVICE,))
        except AzureError:
            return False
        return True

    routes.host(".docker.io").add("GET,HEAD", "{path:path}", docker_hub, auth="none")
    routes.host("mcr.microsoft.com").add("GET,HEAD", "{path:path}", mcr, auth="none")
