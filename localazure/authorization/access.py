"""Access checks: does a principal hold an action (or a data action) at a scope, through a role
assignment at that scope or any parent scope? Used by every RBAC-checked route, the registry
data plane and the simulated workloads that pull images."""

from __future__ import annotations

import re
from typing import Any

from localazure.authorization import roles
from localazure.core.context import Context
from localazure.core.errors import authorization_failed
from localazure.core.tokens import Caller

ASSIGNMENT_KIND = "role-assignment"


def normalise_scope(scope: str) -> str:
    """A scope as ARM compares it: single slashes, no trailing slash, ``""`` for the tenant root."""
    return re.sub("/+", "/", "/" + scope.strip("/")).rstrip("/")


def _covers(scope: str, resource_id: str) -> bool:
    scope = scope.rstrip("/").lower()
    target = resource_id.rstrip("/").lower()
    return scope in ("", "/") or target == scope or target.startswith(scope + "/")


def covers(scope: str, resource_id: str) -> bool:
    """True when an assignment at ``scope`` applies to ``resource_id`` (same or a child)."""
    return _covers(normalise_scope(scope), normalise_scope(resource_id))


def assignments_for(ctx: Context, object_id: str) -> list[dict[str, Any]]:
    return [
        a
        for a in ctx.store.values(ASSIGNMENT_KIND)
        if a["properties"]["principalId"].lower() == object_id.lower()
    ]


def is_allowed(
    ctx: Context, object_id: str, action: str, resource_id: str, *, data: bool = False
) -> bool:
    """Whether a role assigned to ``object_id`` at ``resource_id`` or above grants ``action``
    (a data action when ``data``)."""
    for assignment in assignments_for(ctx, object_id):
        props = assignment["properties"]
        if not _covers(props["scope"], resource_id):
            continue
        role = roles.find(ctx, roles.role_guid_from_definition_id(props["roleDefinitionId"]))
        if role and roles.allows(role, action, data=data):
            return True
    return False


def require(ctx: Context, caller: Caller, action: str, scope: str) -> None:
    """Raise ARM's 403 ``AuthorizationFailed`` unless ``caller`` may perform ``action`` on
    ``scope`` (a resource id, or the id of what is about to be created)."""
    if not is_allowed(ctx, caller.object_id, action, scope):
        raise authorization_failed(caller.object_id, action, scope)
