"""The admin API, outside Azure's namespace (``/_localazure/...``): health, reset, faults, the
request log, and the managed-identity environment of a workload. It needs no token: it is for
the machine's own tests and tools."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from localazure import __version__
from localazure.core import faults
from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.http import empty, json_body, json_response
from localazure.core.router import Router
from localazure.identity.routes import bind_workload_identity

PREFIX = "/_localazure"


def register(router: Router, ctx: Context, reset) -> None:
    async def health(request: Request) -> Response:
        return json_response(
            {
                "status": "ok",
                "version": __version__,
                "endpoint": ctx.endpoint,
                "tenant_id": ctx.settings.tenant_id,
                "subscription_id": ctx.subscription_id,
            }
        )

    async def do_reset(request: Request) -> Response:
        reset()
        return json_response({"status": "reset"})

    async def add_fault(request: Request) -> Response:
        try:
            fault = faults.add(ctx.store, await json_body(request))
        except (ValueError, TypeError) as err:
            raise bad_request("InvalidFault", str(err)) from None
        return json_response(fault, 201)

    async def list_faults(request: Request) -> Response:
        return json_response({"value": ctx.store.values(faults.KIND)})

    async def clear_faults(request: Request) -> Response:
        ctx.store.delete_prefix(faults.KIND, "")
        return empty(204)

    async def request_log(request: Request) -> Response:
        since = int(request.query_params.get("since", 0))
        return json_response({"value": ctx.store.request_log(since=since)})

    router.add("GET", PREFIX + "/health", health, auth="none")
    router.add("POST", PREFIX + "/reset", do_reset, auth="none")
    router.add("POST", PREFIX + "/faults", add_fault, auth="none")
    router.add("GET", PREFIX + "/faults", list_faults, auth="none")
    router.add("DELETE", PREFIX + "/faults", clear_faults, auth="none")

    async def workload_identity(request: Request) -> Response:
        """The managed-identity environment a workload of the given principals would get (App
        Service protocol), for tools and tests that act as such a workload."""
        body = await json_body(request)
        object_ids = body.get("principalIds")
        if not isinstance(object_ids, list) or not object_ids:
            raise bad_request("InvalidRequest", "'principalIds' must list at least one object id.")
        secret = bind_workload_identity(ctx, *map(str, object_ids))
        return json_response(
            {"IDENTITY_ENDPOINT": f"{ctx.endpoint}/msi/token", "IDENTITY_HEADER": secret}, 201
        )

    router.add("GET", PREFIX + "/requests", request_log, auth="none")
    router.add("POST", PREFIX + "/workload-identities", workload_identity, auth="none")
