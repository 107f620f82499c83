"""Docker Hub and MCR as an emulated service (see ``routes``)."""

from __future__ import annotations

from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.publicregistry import routes as public_routes


class PublicRegistryService(BaseService):
    name = "publicregistry"

    def register(self, routes: Routes, ctx: Context) -> None:
        public_routes.register(routes, ctx)
