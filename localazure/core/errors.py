"""Azure's error envelope: ``{"error": {"code": ..., "message": ...}}`` with the status Azure uses."""

from __future__ import annotations

from typing import Any


class AzureError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
        target: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details
        self.target = target

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        if self.details:
            error["details"] = self.details
        return {"error": error}


def bad_request(code: str, message: str, **kw: Any) -> AzureError:
    return AzureError(400, code, message, **kw)


def not_found(code: str, message: str) -> AzureError:
    return AzureError(404, code, message)


def conflict(code: str, message: str) -> AzureError:
    return AzureError(409, code, message)


def resource_not_found(resource_type: str, name: str, resource_group: str) -> AzureError:
    return not_found(
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{resource_group}' "
        "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def resource_group_not_found(name: str) -> AzureError:
    return not_found("ResourceGroupNotFound", f"Resource group '{name}' could not be found.")


def authorization_failed(principal: str, action: str, scope: str) -> AzureError:
    return AzureError(
        403,
        "AuthorizationFailed",
        f"The client '{principal}' with object id '{principal}' does not have authorization to "
        f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was "
        "recently granted, please refresh your credentials.",
    )
