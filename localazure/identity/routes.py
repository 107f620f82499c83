"""Microsoft identity platform endpoints: OIDC discovery, JWKS, client-credentials tokens,
and the managed-identity token endpoint that workloads use (App Service protocol:
``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``)."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from localazure.core.context import Context
from localazure.core.http import json_response
from localazure.core.router import Router
from localazure.identity import principals

MSI_SECRET_KIND = "msi-secret"


def _aad_error(status: int, error: str, code: int, description: str) -> Response:
    now = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    trace = str(uuid.uuid4())
    return json_response(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
            f"Correlation ID: {uuid.uuid4()} Timestamp: {now}",
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
        },
        status,
    )


def bind_workload_identity(ctx: Context, object_id: str, *others: str) -> str:
    """Give a workload a secret with which it can get tokens for ``object_id`` (the default) and
    for ``others`` (chosen with ``client_id``, ``object_id`` or ``mi_res_id``, as on Azure)."""
    secret = uuid.uuid4().hex
    ctx.store.put(MSI_SECRET_KIND, secret, {"objectId": object_id, "others": list(others)})
    return secret


# Query parameters that pick one of a workload's identities: App Service (2019-08-01) and
# Azure ML (MSI_ENDPOINT, 2017-09-01) protocols.
_IDENTITY_SELECTORS = ("client_id", "clientid", "object_id", "principal_id", "mi_res_id")


def _selected_identity(ctx: Context, binding: dict[str, Any], request: Request) -> str | None:
    """The object id a token request asks for among the workload's identities; None when it
    names one the workload does not have."""
    wanted = next(
        (request.query_params[k] for k in _IDENTITY_SELECTORS if request.query_params.get(k)),
        None,
    )
    if wanted is None:
        return binding["objectId"]
    for object_id in [binding["objectId"], *binding.get("others", [])]:
        principal = principals.get(ctx, object_id) or {}
        names = (principal.get("objectId"), principal.get("appId"), principal.get("resourceId"))
        if wanted.lower() in {str(n).lower() for n in names if n}:
            return object_id
    return None


def register(router: Router, ctx: Context) -> None:
    endpoint = ctx.endpoint

    async def openid_configuration(request: Request, tenant: str) -> Response:
        base = f"{endpoint}/{ctx.settings.tenant_id}"
        return json_response(
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "response_types_supported": [
                    "code",
                    "id_token",
                    "code id_token",
                    "token id_token",
                    "token",
                ],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                ],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "tenant_region_scope": "NA",
                "cloud_instance_name": "localazure",
                "msgraph_host": "graph.microsoft.com",
            }
        )

    async def keys(request: Request, tenant: str) -> Response:
        return json_response(ctx.issuer.jwks())

    async def token(request: Request, tenant: str, version: str = "v2.0") -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = form.get("grant_type")
        if grant != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id = form.get("client_id", "")
        principal = principals.by_app_id(ctx, client_id)
        if principal is None or principal["type"] != "ServicePrincipal":
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{ctx.settings.tenant_id}'. This can happen if the application has not been "
                "installed by the administrator of the tenant or consented to by any user in the "
                "tenant. You may have sent your authentication request to the wrong tenant.",
            )
        if tenant.lower() not in (ctx.settings.tenant_id, "organizations"):
            return _aad_error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud.",
            )
        if not principals.check_secret(principal, form.get("client_secret", "")):
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )
        audience = form.get("scope") or form.get("resource") or ""
        audience = audience.split()[0] if audience else ""
        access, expires_on = ctx.issuer.issue(
            audience=audience,
            object_id=principal["objectId"],
            app_id=principal["appId"],
            kind="ServicePrincipal",
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": expires_on - int(time.time()),
            "ext_expires_in": expires_on - int(time.time()),
            "access_token": access,
        }
        if version == "v1":
            body.update({"expires_on": str(expires_on), "resource": audience})
        return json_response(body)

    async def token_v1(request: Request, tenant: str) -> Response:
        return await token(request, tenant, version="v1")

    async def managed_identity_token(request: Request) -> Response:
        secret = request.headers.get("x-identity-header") or request.headers.get("secret")
        binding = ctx.store.get(MSI_SECRET_KIND, secret or "")
        if binding is None:
            return json_response(
                {
                    "error": "invalid_request",
                    "error_description": "Required audience, "
                    "identity header or identity not found.",
                },
                400,
            )
        selected = _selected_identity(ctx, binding, request)
        principal = principals.get(ctx, selected) if selected else None
        if principal is None:
            return json_response(
                {"error": "invalid_request", "error_description": "Identity not found"}, 400
            )
        resource = request.query_params.get("resource", "")
        access, expires_on = ctx.issuer.issue(
            audience=resource,
            object_id=principal["objectId"],
            app_id=principal["appId"],
            kind="ManagedIdentity",
        )
        return json_response(
            {
                "access_token": access,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": principal["appId"],
            }
        )

    router.add(
        "GET", "/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, auth="none"
    )
    router.add(
        "GET", "/{tenant}/.well-known/openid-configuration", openid_configuration, auth="none"
    )
    router.add("GET", "/{tenant}/discovery/v2.0/keys", keys, auth="none")
    router.add("GET", "/{tenant}/discovery/keys", keys, auth="none")
    router.add("POST", "/{tenant}/oauth2/v2.0/token", token, auth="none")
    router.add("POST", "/{tenant}/oauth2/token", token_v1, auth="none")
    router.add("GET", "/msi/token", managed_identity_token, auth="none")
