"""Registers Azure Container Registry with the emulator: the management routes on ARM, the data
plane on ``*.azurecr.io``, and the delete hook that drops registry state with its resource."""

from __future__ import annotations

from typing import Any

from localazure.acr import LOGIN_SUFFIX, dataplane, registries, tokens
from localazure.core.context import Context


def register(app: Any, ctx: Context) -> None:
    registries.register(app.router, ctx)
    dataplane.register(app.host_router(LOGIN_SUFFIX), ctx)
    ctx.delete_hooks.append(registries.forget_registries)


def bootstrap(ctx: Context) -> None:
    tokens.ensure_signing_key(ctx)
