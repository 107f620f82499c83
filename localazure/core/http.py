"""Response helpers shared by the services."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.core.errors import AzureError, bad_request


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def empty(status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(b"", status_code=status, headers=headers)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise bad_request(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        ) from None
    if not isinstance(body, dict):
        raise bad_request("InvalidRequestContent", "The request content must be a JSON object.")
    return body


def require_api_version(request: Request) -> str:
    version = request.query_params.get("api-version")
    if not version:
        raise AzureError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    return version


def list_page(items: list[Any]) -> dict[str, Any]:
    return {"value": items}


def enum_value(requested: Any, allowed: tuple[str, ...], name: str) -> str:
    """``requested`` as Azure spells it among ``allowed`` (case-insensitive), or ARM's
    deserialization error."""
    found = next((value for value in allowed if value.lower() == str(requested).lower()), None)
    if found is None:
        raise bad_request(
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: 'Requested value "
            f"'{requested}' was not found.' ({name} is one of {', '.join(allowed)}).",
        )
    return found
