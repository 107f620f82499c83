"""Cloud metadata: ``/metadata/endpoints``, in the 2015-01-01 shape azure-cli-core and
msrestazure read and the 2019-05-01+ list shape azure-ai-ml reads."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.core.context import Context
from localazure.core.http import json_response
from localazure.core.router import Router
from localazure.settings import REDIRECTED_SUFFIXES

CLOUD_NAME = "LocalAzure"


def cloud_metadata(ctx: Context) -> dict[str, Any]:
    endpoint = ctx.endpoint
    return {
        # 2015-01-01 fields
        "galleryEndpoint": f"{endpoint}/gallery/",
        "graphEndpoint": "https://graph.windows.net/",
        "portalEndpoint": "https://portal.azure.com/",
        "authentication": {
            "loginEndpoint": endpoint,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        # 2019-05-01+ fields
        "name": CLOUD_NAME,
        "portal": "https://portal.azure.com",
        "resourceManager": f"{endpoint}/",
        "sqlManagement": "https://management.core.windows.net:8443/",
        "media": "https://rest.media.azure.net",
        "graph": "https://graph.windows.net/",
        "microsoftGraphResourceId": "https://graph.microsoft.com/",
        "batch": "https://batch.core.windows.net/",
        "suffixes": {
            "acrLoginServer": REDIRECTED_SUFFIXES[0],
            "keyVaultDns": "vault.azure.net",
            "storage": "core.windows.net",
            "sqlServerHostname": "database.windows.net",
        },
    }


def register(router: Router, ctx: Context) -> None:
    async def endpoints(request: Request) -> Response:
        version = request.query_params.get("api-version", "2015-01-01")
        body = cloud_metadata(ctx)
        return json_response(body if version < "2019-05-01" else [body])

    router.add("GET", "/metadata/endpoints", endpoints, auth="none")
