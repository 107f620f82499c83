"""Microsoft.Compute as an emulated service: VMs, disks, images, the marketplace and sizes on
ARM, the VMs' Docker engine and the admin routes, and its lifecycle (SSH servers, custom data,
containers) on a lifecycle loop of its own (``nodes.lifecycle``), started with the server."""

from __future__ import annotations

from localazure.compute import (
    DISK_TYPE,
    IMAGE_TYPE,
    admin,
    disks,
    docker_engine,
    images,
    marketplace,
    power,
    sandbox,
    virtual_machines,
)
from localazure.compute.ssh import SshHub
from localazure.compute.vm_lifecycle import VmLifecycle
from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.nodes.containers import ContainerRuntime
from localazure.nodes.lifecycle import LifecycleLoop


class ComputeService(BaseService):
    name = "compute"

    def __init__(self) -> None:
        self._loop: LifecycleLoop | None = None
        self._hub: SshHub | None = None

    def register(self, routes: Routes, ctx: Context) -> None:
        for module in (virtual_machines, disks, images, marketplace, docker_engine, admin):
            module.register(routes.arm, ctx)
        runtime = ContainerRuntime()
        self._hub = SshHub()
        self._loop = LifecycleLoop(ctx, runtime, [VmLifecycle(ctx, runtime, self._hub)])

    def bootstrap(self, ctx: Context) -> None:
        owners = [
            r["id"] for t in (DISK_TYPE, IMAGE_TYPE) for r in ctx.store.list_resources(type=t)
        ]
        sandbox.remove_orphans(ctx, owners)

    def start(self) -> None:
        if self._hub is not None and self._loop is not None:
            self._hub.start()
            self._loop.start()

    def stop(self) -> None:
        if self._loop is not None and self._hub is not None:
            self._loop.stop()
            self._hub.close()

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        target = resource_id.rstrip("/").lower()
        for record in power.all_records(ctx):
            if record["id"].lower() == target or record["id"].lower().startswith(target + "/"):
                power.deallocate(ctx, record, "vm deleted")
                ctx.store.delete(power.KIND, power.key(record["id"]))
        disks.forget_under(ctx, resource_id)
        images.forget_under(ctx, resource_id)
