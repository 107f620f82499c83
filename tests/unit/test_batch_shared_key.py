"""The emulator's Shared Key check rebuilds exactly the string azure-batch 14.2.0's
``SharedKeyAuth`` signs, for the requests the SDK sends (query strings, JSON bodies, ranges)."""

from __future__ import annotations

import base64

import pytest
import requests
from azure.batch.batch_auth import SharedKeyAuth
from starlette.requests import Request

from localazure.batch.shared_key import sign, string_to_sign

KEY = base64.b64encode(b"k" * 64).decode()


def _signed(method: str, url: str, **kwargs) -> requests.PreparedRequest:
    prepared = requests.Request(method, url, **kwargs).prepare()
    return SharedKeyAuth("Authorization", "acct", KEY)(prepared)


def _as_received(prepared: requests.PreparedRequest) -> Request:
    path, _, query = prepared.path_url.partition("?")
    scope = {
        "type": "http",
        "method": prepared.method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in prepared.headers.items()],
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [
        ("GET", "https://acct.eastus.batch.azure.com/pools?api-version=2024-02-01.19.0", {}),
        (
            "GET",
            "https://acct.eastus.batch.azure.com/jobs/run1/tasks?api-version=2024-02-01.19.0"
            "&$filter=state%20eq%20%27completed%27&maxresults=100",
            {},
        ),
        (
            "POST",
            "https://acct.eastus.batch.azure.com/jobs?api-version=2024-02-01.19.0&timeout=30",
            {"json": {"id": "run1", "poolInfo": {"poolId": "waa"}}},
        ),
        (
            "GET",
            "https://acct.eastus.batch.azure.com/jobs/run1/tasks/t1/files/stdout.txt"
            "?api-version=2024-02-01.19.0",
            {"headers": {"ocp-range": "bytes=100-", "client-request-id": "abc"}},
        ),
    ],
)
def test_signature_matches_the_sdks(method, url, kwargs):
    prepared = _signed(method, url, **kwargs)
    expected = prepared.headers["Authorization"].split(":", 1)[1]
    assert sign(KEY, string_to_sign(_as_received(prepared), "acct")) == expected


def test_a_different_key_gives_a_different_signature():
    prepared = _signed("GET", "https://acct.eastus.batch.azure.com/pools?api-version=1")
    other = base64.b64encode(b"x" * 64).decode()
    expected = prepared.headers["Authorization"].split(":", 1)[1]
    assert sign(other, string_to_sign(_as_received(prepared), "acct")) != expected
