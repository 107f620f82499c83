"""Microsoft.Authorization: built-in role definitions and role assignments, enforced on ARM.

``bootstrap`` makes the development service principal Owner of the subscription through a real
role assignment, so that every other principal gets only what is assigned to it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from localazure.authorization import assignments, definitions
from localazure.core.context import Context

if TYPE_CHECKING:
    from localazure.app import LocalAzure


def register(app: LocalAzure, ctx: Context) -> None:
    definitions.register(app.router, ctx)
    assignments.register(app.router, ctx)
    ctx.delete_hooks.append(assignments.drop_assignments_under)


def bootstrap(ctx: Context) -> None:
    assignments.ensure_development_owner(ctx)
