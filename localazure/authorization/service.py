"""Microsoft.Authorization as an emulated service: built-in role definitions and role
assignments.

``bootstrap`` makes the development service principal Owner of the subscription through a real
role assignment, so that every other principal gets only what is assigned to it."""

from __future__ import annotations

from localazure.authorization import assignments, definitions
from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService


class AuthorizationService(BaseService):
    name = "authorization"

    def register(self, routes: Routes, ctx: Context) -> None:
        definitions.register(routes.arm, ctx)
        assignments.register(routes.arm, ctx)

    def bootstrap(self, ctx: Context) -> None:
        assignments.ensure_development_owner(ctx)

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        assignments.drop_assignments_under(ctx, resource_id)
