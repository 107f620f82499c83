"""Microsoft Entra ID as an emulated service: the token endpoints and the directory of principals,
with the development service principal present after every start and reset."""

from __future__ import annotations

from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.identity import principals
from localazure.identity import routes as identity_routes


class IdentityService(BaseService):
    name = "identity"

    def register(self, routes: Routes, ctx: Context) -> None:
        identity_routes.register(routes.arm, ctx)

    def bootstrap(self, ctx: Context) -> None:
        principals.ensure_development_principal(ctx)
