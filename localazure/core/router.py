"""A small case-insensitive router over Starlette requests.

Azure paths are case-insensitive (``resourceGroups`` and ``resourcegroups`` are the same), which
Starlette's own router cannot express; each service registers its routes here with the kind of
authentication they need and, for ARM routes, what Azure authorizes before the handler runs:

- ``parent``: a function of the path parameters that returns the resource the request acts
  under (the subscription, the resource group, the workspace), raising Azure's 404 when it is
  absent; the handler finds it in ``request.state.parent``;
- ``action``: the Azure action (``Microsoft.MachineLearningServices/workspaces/jobs/write``) the
  caller must hold, through a role assignment, over ``scope``: a template over the path
  parameters and ``{parent}`` (the parent's id), the parent itself by default.

The application resolves the parent and checks the action once per request, before the
handler, answering ``AuthorizationFailed`` (403) as ARM does.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from starlette.responses import Response

Handler = Callable[..., Awaitable[Response]]
ParentResolver = Callable[..., dict[str, Any]]
AuthKind = Literal["arm", "none", "ml", "custom"]

_PLACEHOLDER = re.compile(r"\{(\w+)(:path)?\}")


def _placeholder_regex(match: re.Match[str]) -> str:
    name, is_path = match.group(1), match.group(2)
    if is_path:
        # ``{name:path}``: zero or more whole segments, each with its leading slash, such as an ARM
        # scope (``/subscriptions/s/resourceGroups/g/providers/...``) or nothing (tenant root).
        return f"(?P<{name}>(?:/[^/]*)*)"
    return f"(?P<{name}>[^/]+)"


def compile_pattern(pattern: str) -> re.Pattern[str]:
    regex = _PLACEHOLDER.sub(_placeholder_regex, pattern.rstrip("/"))
    return re.compile(f"^{regex}/?$", re.IGNORECASE)


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    handler: Handler
    auth: AuthKind
    # The handler's name, for the request log.
    name: str
    action: str | None = None
    parent: ParentResolver | None = None
    scope: str | Callable[..., str] = "{parent}"

    def authorization_scope(self, parent: dict[str, Any] | None, params: dict[str, str]) -> str:
        parent_id = parent["id"] if parent else ""
        if callable(self.scope):
            return self.scope(parent=parent_id, **params)
        return self.scope.format(parent=parent_id, **params)


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self,
        methods: str,
        pattern: str,
        handler: Handler,
        *,
        auth: AuthKind = "arm",
        action: str | None = None,
        parent: ParentResolver | None = None,
        scope: str | Callable[..., str] = "{parent}",
    ) -> None:
        if action is not None and auth != "arm":
            raise ValueError(f"{handler.__name__}: only ARM routes declare an action")
        self.routes.append(
            Route(
                frozenset(m.strip().upper() for m in methods.split(",")),
                compile_pattern(pattern),
                handler,
                auth,
                handler.__name__,
                action,
                parent,
                scope,
            )
        )

    def include(self, other: Router) -> None:
        self.routes.extend(other.routes)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """Return (route, params, path_matched_any_method)."""
        path_matched = False
        for route in self.routes:
            m = route.pattern.match(path)
            if not m:
                continue
            path_matched = True
            if method in route.methods:
                return route, m.groupdict(), True
        return None, {}, path_matched


class Routes:
    """Where services register their routes: ``arm`` for ``management.azure.com`` (and the
    emulator's own endpoint), ``host(suffix)`` for a data plane served on its own host names
    (``<registry>.azurecr.io``, ``mcr.microsoft.com``)."""

    def __init__(self) -> None:
        self.arm = Router()
        self.hosts: dict[str, Router] = {}

    def host(self, suffix: str) -> Router:
        return self.hosts.setdefault(suffix, Router())
