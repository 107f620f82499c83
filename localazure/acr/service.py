"""Azure Container Registry as an emulated service: the management routes on ARM, the data plane
on ``*.azurecr.io``, and the delete hook that drops registry state with its resource."""

from __future__ import annotations

from localazure.acr import LOGIN_SUFFIX, dataplane, registries, runs, tokens
from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService


class ContainerRegistryService(BaseService):
    name = "acr"

    def register(self, routes: Routes, ctx: Context) -> None:
        registries.register(routes.arm, ctx)
        runs.register(routes.arm, ctx)
        dataplane.register(routes.host(LOGIN_SUFFIX), ctx)

    def bootstrap(self, ctx: Context) -> None:
        tokens.ensure_signing_key(ctx)

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        registries.forget_registries(ctx, resource_id)
        runs.forget_under(ctx, resource_id)
