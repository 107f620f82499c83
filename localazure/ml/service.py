"""Azure Machine Learning as an emulated service: workspaces, computes, environments, jobs and run
history on ARM, the ML admin routes, and its job runner on the shared lifecycle loop
(``localazure.nodes``), started and stopped with the server."""

from __future__ import annotations

from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.ml import (
    admin,
    computes,
    datastores,
    environments,
    jobs,
    runhistory,
    workspaces,
)
from localazure.ml.job_runner import JobRunner
from localazure.nodes import pool as node_pool
from localazure.nodes.containers import ContainerRuntime
from localazure.nodes.lifecycle import LifecycleLoop


class MachineLearningService(BaseService):
    name = "ml"

    def __init__(self) -> None:
        self._loop: LifecycleLoop | None = None

    def register(self, routes: Routes, ctx: Context) -> None:
        for module in (workspaces, computes, environments, datastores, jobs, runhistory, admin):
            module.register(routes.arm, ctx)
        runtime = ContainerRuntime()
        self._loop = LifecycleLoop(ctx, runtime, [JobRunner(ctx, runtime)])

    def bootstrap(self, ctx: Context) -> None:
        jobs.remove_orphan_files(ctx)

    def start(self) -> None:
        if self._loop is not None:
            self._loop.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        workspaces.drop_principals_under(ctx, resource_id)
        node_pool.release_under(ctx, resource_id, ctx.clock())
        jobs.forget_under(ctx, resource_id)
