"""The ASGI application: one entry point dispatching on host and path to the services.

Requests to ``<registry>.azurecr.io`` go to the registry data plane; everything else is matched
against ARM, identity, metadata and admin routes. Every answer carries ``x-ms-request-id``, is
written to the request log (never with bodies or credentials), and passes fault injection first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from localazure.admin import routes as admin_routes
from localazure.admin.routes import PREFIX as ADMIN_PREFIX
from localazure.arm import catalog
from localazure.arm import routes as arm_routes
from localazure.authorization.access import require
from localazure.core import faults, operations
from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.core.http import json_response
from localazure.core.router import Routes
from localazure.core.service import Service
from localazure.core.tokens import ARM_AUDIENCES
from localazure.metadata import routes as metadata_routes
from localazure.services import all_services
from localazure.settings import REDIRECTED_SUFFIXES

REQUEST_LOG_PATH = ADMIN_PREFIX + "/requests"

log = logging.getLogger("localazure")


class LocalAzure:
    def __init__(self, ctx: Context, services: list[Service] | None = None):
        self.ctx = ctx
        self.routes = Routes()
        self.services = all_services() if services is None else services
        # ARM accepts its own endpoint as an audience, as management.azure.com does.
        self.arm_audiences = (*ARM_AUDIENCES, ctx.endpoint)
        operations.register(self.routes.arm, ctx)
        metadata_routes.register(self.routes.arm, ctx)
        arm_routes.register(self.routes.arm, ctx, self.dispatch_internal)
        admin_routes.register(self.routes.arm, ctx, self.reset)
        for service in self.services:
            service.register(self.routes, ctx)
        ctx.delete_hooks = [service.on_delete for service in self.services]
        self.bootstrap()

    # -- lifecycle ----------------------------------------------------------------------------

    def bootstrap(self) -> None:
        for service in self.services:
            service.bootstrap(self.ctx)

    def reset(self) -> None:
        self.ctx.store.reset()
        self.bootstrap()

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        fault_id = None
        principal = None
        host = _host_of(request)
        try:
            if not request.url.path.startswith(ADMIN_PREFIX):
                fault = faults.take(self.ctx.store, request.method, host, request.url.path)
                if fault:
                    fault_id = fault["id"]
                    if fault["latency_ms"]:
                        await asyncio.sleep(fault["latency_ms"] / 1000)
                    if fault["status"]:
                        raise faults.as_error(fault)
            operations.tick(self.ctx)
            response = await self._route(request, host)
            principal = getattr(request.state, "caller", None)
        except AzureError as err:
            response = json_response(err.body(), err.status, err.headers)
        except Exception:  # noqa: BLE001 - the emulator answers as Azure does: 500 with an envelope
            log.error(
                "unhandled error on %s %s\n%s",
                request.method,
                request.url.path,
                traceback.format_exc(),
            )
            response = json_response(
                {
                    "error": {
                        "code": "InternalServerError",
                        "message": "localazure hit an internal error; see its server log.",
                    }
                },
                500,
            )
        response.headers["x-ms-request-id"] = request_id
        response.headers["x-ms-correlation-request-id"] = request.headers.get(
            "x-ms-correlation-request-id", request_id
        )
        client_request_id = request.headers.get("x-ms-client-request-id")
        if client_request_id:
            response.headers["x-ms-client-request-id"] = client_request_id
        if request.url.path != REQUEST_LOG_PATH:  # reading the log does not grow it
            self._log(request, host, response.status_code, started, request_id, principal, fault_id)
        await response(scope, receive, send)

    def _log(self, request, host, status, started, request_id, principal, fault_id) -> None:
        self.ctx.store.log_request(
            {
                "ts": time.time(),
                "method": request.method,
                "host": host,
                "path": request.url.path,
                "query": _redacted_query(request),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "request_id": request_id,
                "principal": str(principal) if principal else None,
                "fault": fault_id,
            }
        )

    async def _route(self, request: Request, host: str) -> Response:
        for suffix, router in self.routes.hosts.items():
            if host.endswith(suffix):
                route, params, matched = router.match(request.method, request.url.path)
                if route is None:
                    raise AzureError(404, "NAME_UNKNOWN", "the requested resource was not found")
                params = {"login_host": host, **params}
                return await route.handler(request, **params)
        route, params, matched = self.routes.arm.match(request.method, request.url.path)
        if route is None:
            if matched:
                raise AzureError(
                    405,
                    "MethodNotAllowed",
                    f"The requested resource does not support http method '{request.method}'.",
                )
            raise catalog.unrouted_error(request.url.path) or AzureError(
                404,
                "InvalidResourceType",
                f"The resource type could not be found for path '{request.url.path}'.",
            )
        if route.auth == "arm":
            caller = self.ctx.issuer.verify(
                request.headers.get("authorization"), self.arm_audiences
            )
            request.state.caller = caller
            parent = route.parent(**params) if route.parent else None
            request.state.parent = parent
            if route.action:
                action = route.action.format(**params)
                require(self.ctx, caller, action, route.authorization_scope(parent, params))
        return await route.handler(request, **params)

    async def dispatch_internal(
        self, outer: Request, method: str, url: str, content: Any
    ) -> tuple[int, dict[str, str], Any]:
        """Run one request of an ARM ``/batch`` call with the outer request's credentials."""
        parts = urlsplit(url)
        body = json.dumps(content).encode() if content is not None else b""
        headers = [(b"authorization", (outer.headers.get("authorization") or "").encode())]
        headers.append((b"host", (outer.headers.get("host") or "").encode()))
        scope = {
            "type": "http",
            "method": method,
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "headers": headers,
            "scheme": "https",
            "server": outer.scope.get("server"),
            "client": outer.scope.get("client"),
            "root_path": "",
            "http_version": "1.1",
        }

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        request = Request(scope, receive)
        started = time.perf_counter()
        try:
            response = await self._route(request, "")
        except AzureError as err:
            status, headers, payload = err.status, dict(err.headers), err.body()
        else:
            status, headers = response.status_code, {}
            payload = json.loads(response.body) if response.body else None
        # Logged as a request of its own (before the envelope's POST /batch): a write inside a
        # batch is a write.
        caller = getattr(request.state, "caller", None)
        self._log(request, _host_of(outer), status, started, str(uuid.uuid4()), caller, None)
        return status, headers, payload

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for service in self.services:
                    service.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for service in reversed(self.services):
                    service.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


_SECRET_PARAMS = ("secret", "password", "sig", "token", "key", "code")


def _host_of(request: Request) -> str:
    return (request.headers.get("host") or "").split(":")[0].lower()


def _redacted_query(request: Request) -> str:
    parts = []
    for key, value in request.query_params.multi_items():
        if any(word in key.lower() for word in _SECRET_PARAMS):
            value = "REDACTED"
        parts.append(f"{key}={value}")
    return "&".join(parts)


def create_app(ctx: Context) -> LocalAzure:
    return LocalAzure(ctx)


__all__ = ["LocalAzure", "create_app", "REDIRECTED_SUFFIXES"]
