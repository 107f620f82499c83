"""Fault injection: answer matching requests with an error, or slow them down, N times.

A fault is ``{"method": "PUT"|"*", "path": <regex searched in the path>, "host": <regex>,
"status": 429, "code": "TooManyRequests", "message": ..., "retry_after": 2, "latency_ms": 0,
"times": 3}``. Workload faults (simulated containers) are kept by the services that run
workloads, under their own kind.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from localazure.core.errors import AzureError
from localazure.core.store import Store

KIND = "fault"

_DEFAULT_CODES = {
    408: "RequestTimeout",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def add(store: Store, spec: dict[str, Any]) -> dict[str, Any]:
    fault = {
        "id": spec.get("id") or uuid.uuid4().hex[:12],
        "method": str(spec.get("method", "*")).upper(),
        "path": spec.get("path", ".*"),
        "host": spec.get("host", ".*"),
        "status": spec.get("status"),
        "code": spec.get("code"),
        "message": spec.get("message"),
        "retry_after": spec.get("retry_after"),
        "latency_ms": int(spec.get("latency_ms", 0)),
        "times": int(spec.get("times", 1)),
        "hits": 0,
    }
    re.compile(fault["path"])
    re.compile(fault["host"])
    if fault["status"] is None and not fault["latency_ms"]:
        raise ValueError("a fault needs a status, a latency_ms, or both")
    store.put(KIND, fault["id"], fault)
    return fault


def take(store: Store, method: str, host: str, path: str) -> dict[str, Any] | None:
    """Return the first live fault matching the request, counting one use of it."""
    with store.transaction():
        for fault in store.values(KIND):
            if fault["times"] <= 0:
                continue
            if fault["method"] not in ("*", method):
                continue
            if not re.search(fault["path"], path, re.IGNORECASE):
                continue
            if not re.search(fault["host"], host, re.IGNORECASE):
                continue
            fault["times"] -= 1
            fault["hits"] += 1
            store.put(KIND, fault["id"], fault)
            return fault
    return None


def as_error(fault: dict[str, Any]) -> AzureError:
    status = int(fault["status"])
    code = fault.get("code") or _DEFAULT_CODES.get(status, "InjectedFault")
    message = fault.get("message") or f"Injected fault {fault['id']}: {code}."
    headers = {}
    if fault.get("retry_after") is not None:
        headers["Retry-After"] = str(fault["retry_after"])
    return AzureError(status, code, message, headers=headers)
