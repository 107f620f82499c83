"""Azure Container Instances as an emulated service: container groups on ARM, the usage admin
route, and the groups' runner on a lifecycle loop of its own (``localazure.nodes``), started and
stopped with the server."""

from __future__ import annotations

from localazure.containerinstance import GROUP_TYPE, admin, groups, runner
from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.nodes.containers import ContainerRuntime
from localazure.nodes.lifecycle import LifecycleLoop


class ContainerInstanceService(BaseService):
    name = "containerinstance"

    def __init__(self) -> None:
        self._runtime = ContainerRuntime()
        self._loop: LifecycleLoop | None = None

    def register(self, routes: Routes, ctx: Context) -> None:
        group_runner = runner.GroupRunner(ctx, self._runtime)
        groups.register(routes.arm, ctx, group_runner)
        admin.register(routes.arm, ctx)
        self._loop = LifecycleLoop(ctx, self._runtime, [group_runner])

    def start(self) -> None:
        if self._loop is not None:
            self._loop.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        target = resource_id.rstrip("/").lower()
        with ctx.store.transaction():
            for group in ctx.store.list_resources(type=GROUP_TYPE):
                key = group["id"].lower()
                if key == target or key.startswith(target + "/"):
                    runner.forget(ctx, self._runtime, group, ctx.clock())
