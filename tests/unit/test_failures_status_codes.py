"""Errors that carry only an HTTP status (no Azure error code): what azure-core raises for a
gateway's or a proxy's answer, an empty body or a body that is not Azure's error shape. The
status decides: 429 and 5xx are transient, whatever the text around them says."""

from __future__ import annotations

import json

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import RequestsTransportResponse
from azure.core.rest import HttpRequest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    FailureKind,
    classify,
    classify_exception,
)

REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
BODIES = {
    "empty": (b"", "text/plain"),
    "text": (b"upstream connect error", "text/plain"),
    "json without a code": (b'{"message": "try later"}', "application/json"),
    "error without a code": (b'{"error": {"message": "try later"}}', "application/json"),
    "html": (b"<html><body>Service busy</body></html>", "text/html"),
}


def http_error(status: int, body: bytes, content_type: str, headers=None) -> HttpResponseError:
    raw = requests.Response()
    raw.status_code = status
    raw.reason = REASONS.get(status, "")
    raw._content = body
    raw.headers.update({"Content-Type": content_type, **(headers or {})})
    return HttpResponseError(
        response=RequestsTransportResponse(HttpRequest("GET", "https://example.test/"), raw)
    )


@pytest.mark.parametrize("body", list(BODIES))
def test_bare_429_is_throttled_and_keeps_retry_after(body):
    failure = classify_exception(http_error(429, *BODIES[body], headers={"Retry-After": "7"}))
    assert (failure.code, failure.kind) == ("Throttled", FailureKind.TRANSIENT)
    assert failure.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("body", list(BODIES))
def test_bare_5xx_is_a_transient_server_error(status, body):
    failure = classify_exception(http_error(status, *BODIES[body]))
    assert failure.kind is FailureKind.TRANSIENT
    assert failure.code in ("ServerError", "ConnectionError")


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_status_alone_without_exception(status):
    assert classify(None, None, status_code=status).kind is FailureKind.TRANSIENT
    assert classify(None, "", status_code=status).kind is FailureKind.TRANSIENT


@pytest.mark.parametrize(
    "message",
    [
        "Number of requests for this subscription exceeded the quota; retry later",
        "invalid parameter rate",
        "The request was throttled",
    ],
)
def test_a_429_is_throttled_whatever_its_text_says(message):
    """A 429 is the service saying "slower", never "this cannot work": a quota or validation
    word in its text must not make it permanent."""
    failure = classify(None, message, status_code=429)
    assert (failure.code, failure.kind) == ("Throttled", FailureKind.TRANSIENT)
    body = json.dumps({"message": message}).encode()
    assert classify_exception(http_error(429, body, "application/json")).is_transient


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_bare_4xx_other_than_429_is_permanent(status):
    failure = classify_exception(http_error(status, b"", "text/plain"))
    assert failure.kind is FailureKind.PERMANENT
