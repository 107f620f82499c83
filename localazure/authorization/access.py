"""Access checks: does a principal hold an action at a scope, through a role assignment at that
scope or any parent scope? Used by the registry data plane (pull needs AcrPull or above) and by
the simulated workloads that pull images."""

from __future__ import annotations

import fnmatch
from typing import Any

from localazure.authorization.roles import BY_ID, role_guid_from_definition_id
from localazure.core.context import Context

ASSIGNMENT_KIND = "role-assignment"
PULL = "Microsoft.ContainerRegistry/registries/pull/read"
PUSH = "Microsoft.ContainerRegistry/registries/push/write"


def _covers(scope: str, resource_id: str) -> bool:
    scope = scope.rstrip("/").lower()
    target = resource_id.rstrip("/").lower()
    return scope in ("", "/") or target == scope or target.startswith(scope + "/")


def _allows(permissions: dict[str, Any], action: str) -> bool:
    action = action.lower()
    granted = any(fnmatch.fnmatchcase(action, a.lower()) for a in permissions["actions"])
    denied = any(fnmatch.fnmatchcase(action, a.lower()) for a in permissions["notActions"])
    return granted and not denied


def assignments_for(ctx: Context, object_id: str) -> list[dict[str, Any]]:
    return [
        a for a in ctx.store.values(ASSIGNMENT_KIND)
        if a["properties"]["principalId"].lower() == object_id.lower()
    ]


def is_allowed(ctx: Context, object_id: str, action: str, resource_id: str) -> bool:
    for assignment in assignments_for(ctx, object_id):
        props = assignment["properties"]
        if not _covers(props["scope"], resource_id):
            continue
        role = BY_ID.get(role_guid_from_definition_id(props["roleDefinitionId"]))
        if role and _allows(role[1], action):
            return True
    return False
