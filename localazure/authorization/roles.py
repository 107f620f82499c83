"""Role definitions: Azure's whole built-in catalogue (``data/builtin_roles.json``, with its
source and licence in ``data/README.md``) and the custom roles created through the API, and the
evaluation of a role's permissions against an action or a data action."""

from __future__ import annotations

import fnmatch
import json
from functools import cache
from pathlib import Path
from typing import Any

from localazure.core.context import Context

ROLE_DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"
CUSTOM_ROLE_KIND = "role-definition"
BUILT_IN_ROLE = "BuiltInRole"
CUSTOM_ROLE = "CustomRole"
_CATALOGUE = Path(__file__).with_name("data") / "builtin_roles.json"


@cache
def _built_in() -> dict[str, dict[str, Any]]:
    roles = json.loads(_CATALOGUE.read_text(encoding="utf-8"))
    return {role["name"].lower(): {**role, "roleType": BUILT_IN_ROLE} for role in roles}


@cache
def _built_in_by_name() -> dict[str, dict[str, Any]]:
    return {role["roleName"].lower(): role for role in _built_in().values()}


def built_in_roles() -> list[dict[str, Any]]:
    return list(_built_in().values())


def built_in(guid: str) -> dict[str, Any] | None:
    return _built_in().get(guid.lower())


def built_in_by_name(role_name: str) -> dict[str, Any] | None:
    return _built_in_by_name().get(role_name.lower())


def custom_roles(ctx: Context) -> list[dict[str, Any]]:
    return list(ctx.store.values(CUSTOM_ROLE_KIND))


def find(ctx: Context, guid: str) -> dict[str, Any] | None:
    """A role by id: built-in, or custom (stored with the same keys plus ``roleType``)."""
    return built_in(guid) or ctx.store.get(CUSTOM_ROLE_KIND, guid.lower())


def definition_body(scope: str, role: dict[str, Any]) -> dict[str, Any]:
    """The role definition as ARM returns it, with its id under ``scope`` (``/subscriptions/...``
    or ``/`` for the tenant root)."""
    properties = {
        "roleName": role["roleName"],
        "type": role["roleType"],
        "description": role["description"],
        "assignableScopes": role["assignableScopes"],
        "permissions": role["permissions"],
        "createdOn": role["createdOn"],
        "updatedOn": role["updatedOn"],
        "createdBy": role.get("createdBy"),
        "updatedBy": role.get("updatedBy"),
    }
    return {
        "id": f"{scope.rstrip('/')}/providers/{ROLE_DEFINITION_TYPE}/{role['name']}",
        "name": role["name"],
        "type": ROLE_DEFINITION_TYPE,
        "properties": properties,
    }


def _matches(patterns: list[str], operation: str) -> bool:
    return any(fnmatch.fnmatchcase(operation, pattern.lower()) for pattern in patterns)


def allows(role: dict[str, Any], operation: str, *, data: bool = False) -> bool:
    """True when one of the role's permission blocks grants ``operation`` and does not exclude
    it: ``actions``/``notActions`` for a control-plane action, ``dataActions``/``notDataActions``
    for a data action (Azure keeps the two apart: ``*`` in ``actions`` grants no data action).
    Permission conditions are not evaluated."""
    operation = operation.lower()
    granted, excluded = ("dataActions", "notDataActions") if data else ("actions", "notActions")
    return any(
        _matches(block.get(granted) or [], operation)
        and not _matches(block.get(excluded) or [], operation)
        for block in role["permissions"]
    )


def role_guid_from_definition_id(definition_id: str) -> str:
    return definition_id.rstrip("/").rsplit("/", 1)[-1].lower()
