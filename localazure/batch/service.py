"""Azure Batch as an emulated service: accounts and pools on ARM, the data plane on
``<account>.<region>.batch.azure.com``, the admin routes, and the runner of pools' nodes and
jobs' tasks on the shared lifecycle loop (``localazure.nodes``)."""

from __future__ import annotations

import shutil

from localazure.authorization.access import covers
from localazure.batch import DNS_SUFFIX, accounts, admin, dataplane, jobs, pools
from localazure.batch.task_runner import BatchRunner
from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.nodes import pool as node_pool
from localazure.nodes.containers import ContainerRuntime
from localazure.nodes.lifecycle import LifecycleLoop


class BatchService(BaseService):
    name = "batch"

    def __init__(self) -> None:
        self._loop: LifecycleLoop | None = None

    def register(self, routes: Routes, ctx: Context) -> None:
        accounts.register(routes.arm, ctx)
        pools.register(routes.arm, ctx)
        admin.register(routes.arm, ctx)
        dataplane.register(routes.host(DNS_SUFFIX), ctx)
        runtime = ContainerRuntime()
        self._loop = LifecycleLoop(ctx, runtime, [BatchRunner(ctx, runtime)])

    def bootstrap(self, ctx: Context) -> None:
        # After a reset no task record is left: their files go too.
        if not ctx.store.values(jobs.TASK_KIND):
            shutil.rmtree(ctx.settings.state_dir / "batch", ignore_errors=True)

    def start(self) -> None:
        if self._loop is not None:
            self._loop.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        for job in ctx.store.values(jobs.JOB_KIND):
            if covers(resource_id, job["account_id"]):
                for task in jobs.tasks_of(ctx, job["account_id"], job["id"]):
                    jobs.remove_files(ctx, task)
                    ctx.store.delete(jobs.TASK_KIND, task["key"])
                ctx.store.delete(jobs.JOB_KIND, jobs.job_key(job["account_id"], job["id"]))
        node_pool.release_under(ctx, resource_id, ctx.clock())
        pools.drop_under(ctx, resource_id)
        accounts.drop_under(ctx, resource_id)
