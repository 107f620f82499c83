"""Long-running operations, as the SDK pollers (azure-mgmt-core ARMPolling) expect them.

A service starts an operation with the work to do on completion; the answer carries
``Azure-AsyncOperation`` (status document) and ``Location`` (final result) headers. Operations
complete lazily: every request first completes the operations whose time has come, so that the
emulator needs no timer thread and stays deterministic under test.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.core.context import Context
from localazure.core.errors import AzureError, not_found
from localazure.core.http import empty, json_response
from localazure.core.router import Router

KIND = "operation"
# kind -> fn(ctx, params) -> result body (or None); raising AzureError fails the operation.
_COMPLETIONS: dict[str, Callable[[Context, dict[str, Any]], Any]] = {}


def on_complete(kind: str):
    def register(fn: Callable[[Context, dict[str, Any]], Any]):
        _COMPLETIONS[kind] = fn
        return fn

    return register


def start(
    ctx: Context,
    *,
    namespace: str,
    location: str,
    kind: str,
    params: dict[str, Any],
    duration: float = 0.0,
) -> dict[str, Any]:
    op_id = str(uuid.uuid4())
    now = ctx.clock()
    op = {
        "id": op_id,
        "namespace": namespace,
        "location": location,
        "kind": kind,
        "params": params,
        "status": "InProgress",
        "startTime": now,
        "completesAt": now + duration,
    }
    ctx.store.put(KIND, op_id, op)
    if duration <= 0:
        _complete(ctx, op)
    return op


def _complete(ctx: Context, op: dict[str, Any]) -> None:
    handler = _COMPLETIONS[op["kind"]]
    try:
        with ctx.store.transaction():
            op["result"] = handler(ctx, op["params"])
            op["status"] = "Succeeded"
    except AzureError as err:
        op["status"] = "Failed"
        op["error"] = err.body()["error"]
    op["endTime"] = ctx.clock()
    ctx.store.put(KIND, op["id"], op)


def tick(ctx: Context) -> None:
    now = ctx.clock()
    for op in ctx.store.values(KIND):
        if op["status"] == "InProgress" and op["completesAt"] <= now:
            _complete(ctx, op)


def _base(ctx: Context, op: dict[str, Any]) -> str:
    return (
        f"{ctx.endpoint}/subscriptions/{ctx.subscription_id}/providers/{op['namespace']}"
        f"/locations/{op['location']}"
    )


def headers(ctx: Context, op: dict[str, Any], api_version: str) -> dict[str, str]:
    remaining = max(0.0, op["completesAt"] - ctx.clock())
    return {
        "Azure-AsyncOperation": f"{_base(ctx, op)}/operationStatuses/{op['id']}?api-version={api_version}",
        "Location": f"{_base(ctx, op)}/operationResults/{op['id']}?api-version={api_version}",
        "Retry-After": str(math.ceil(remaining)) if op["status"] == "InProgress" else "0",
    }


def accepted(
    ctx: Context,
    api_version: str,
    *,
    namespace: str,
    location: str,
    kind: str,
    params: dict[str, Any],
    duration: float = 0.0,
) -> Response:
    """Start an operation and answer 202 Accepted with the headers the pollers follow."""
    op = start(
        ctx, namespace=namespace, location=location, kind=kind, params=params, duration=duration
    )
    return empty(202, headers=headers(ctx, op, api_version))


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _load(ctx: Context, op_id: str) -> dict[str, Any]:
    op = ctx.store.get(KIND, op_id)
    if op is None:
        raise not_found("OperationNotFound", f"The operation '{op_id}' could not be found.")
    return op


def register(router: Router, ctx: Context) -> None:
    async def operation_status(
        request: Request, sub: str, ns: str, loc: str, op_id: str
    ) -> Response:
        op = _load(ctx, op_id)
        body: dict[str, Any] = {
            "id": f"{_base(ctx, op)}/operationStatuses/{op_id}".removeprefix(ctx.endpoint),
            "name": op_id,
            "status": op["status"],
            "startTime": _iso(op["startTime"]),
        }
        if op["status"] != "InProgress":
            body["endTime"] = _iso(op.get("endTime"))
        if op.get("error"):
            body["error"] = op["error"]
        hdrs = {"Retry-After": headers(ctx, op, "x")["Retry-After"]}
        return json_response(body, headers=hdrs)

    async def operation_result(
        request: Request, sub: str, ns: str, loc: str, op_id: str
    ) -> Response:
        op = _load(ctx, op_id)
        api_version = request.query_params.get("api-version", "")
        if op["status"] == "InProgress":
            return empty(202, headers=headers(ctx, op, api_version))
        if op["status"] == "Failed":
            raise AzureError(400, op["error"]["code"], op["error"]["message"])
        if op.get("result") is None:
            return empty(204)
        return json_response(op["result"])

    prefix = "/subscriptions/{sub}/providers/{ns}/locations/{loc}"
    router.add("GET", prefix + "/operationStatuses/{op_id}", operation_status)
    router.add("GET", prefix + "/operationResults/{op_id}", operation_result)
