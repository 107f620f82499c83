"""The lifecycle every emulated service has, typed, so that the application runs services without
knowing them and services never import the application.

The application calls, for each service in order:

- ``register(routes, ctx)`` once, to add its routes (``routes.arm`` or ``routes.host(suffix)``);
- ``bootstrap(ctx)`` after every start and every reset, for state that must exist (a signing key,
  the development principal's role assignment);
- ``start()`` and ``stop()`` with the server's lifespan, for background work (a scheduler thread);
- ``on_delete(ctx, resource_id)`` inside the store transaction that deletes a resource or the
  resource group holding it, to drop the service's own records beneath that id.

``BaseService`` gives every step a no-op, so a service defines only what it needs.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from localazure.core.context import Context
from localazure.core.router import Routes


@runtime_checkable
class Service(Protocol):
    name: str

    def register(self, routes: Routes, ctx: Context) -> None: ...

    def bootstrap(self, ctx: Context) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def on_delete(self, ctx: Context, resource_id: str) -> None: ...


class BaseService:
    name = "service"

    def register(self, routes: Routes, ctx: Context) -> None:
        return None

    def bootstrap(self, ctx: Context) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        return None
