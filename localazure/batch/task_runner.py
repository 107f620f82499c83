"""Batch's workloads on the shared lifecycle loop (``localazure.nodes.lifecycle``): each tick the
pools' nodes move (``nodes.NodeLifecycle``), then every task one step.

A task is placed on an idle node of its job's pool (oldest task first); its container image is
pulled unless the node holds it (``preparing``); then its command line runs as the container
(``nodes.containers``: the image's environment, the WAA stand-in for the WAA image, and its
nested-virtualization rule: on a TrustedLaunch pool or a size without nested virtualization the
WAA container explains why and exits 1). Output goes to the task's ``stdout.txt`` and
``stderr.txt``. A non-zero exit is retried up to ``maxTaskRetryCount``; ``maxWallClockTime``
ends the task; ``exitConditions`` may terminate the job. A task whose node is preempted, made
unusable or removed by a resize (``requeue``) goes back to ``active`` (``requeueCount``).
Workload faults (``nodes.workload_faults``) match ``<job id>/<task id>``.

After a restart, tasks that were running lose their process and are requeued.
"""

from __future__ import annotations

import logging
import shlex
import signal
from typing import Any

from localazure.batch import POOL_TYPE, accounts, jobs, nodes, pool_model
from localazure.batch.exit_conditions import job_action
from localazure.core.context import Context
from localazure.identity.routes import bind_workload_identity
from localazure.nodes import containers, image_pull, workload_faults
from localazure.nodes import pool as node_pool
from localazure.nodes.containers import ContainerRuntime

log = logging.getLogger("localazure.batch")
TERMINATE_GRACE_S = 2.0
RECENT_TASKS = 10


def _failure(code: str, message: str, category: str = "userError") -> dict[str, Any]:
    return {"category": category, "code": code, "message": message, "details": []}


EXIT_FAILURE = _failure(
    "FailureExitCode", "The task exited with an exit code representing a failure"
)


class BatchRunner:
    """The ``Workloads`` of Azure Batch."""

    name = "batch"

    def __init__(self, ctx: Context, runtime: ContainerRuntime):
        self.ctx = ctx
        self.runtime = runtime
        self.node_lifecycle = nodes.NodeLifecycle(ctx, runtime)

    def recover(self, stopped_at: float) -> None:
        for task in jobs.all_tasks(self.ctx):
            if task["state"] in ("preparing", "running"):
                self._requeue(task, stopped_at)
                jobs.save_task(self.ctx, task, stopped_at)

    def tick(self, now: float) -> None:
        ctx = self.ctx
        pools = ctx.store.list_resources(type=POOL_TYPE)
        self.node_lifecycle.tick(pools, now)
        tasks = jobs.all_tasks(ctx)
        live = {t["key"] for t in tasks if t["state"] in ("preparing", "running")}
        for key in self.runtime.running_keys():
            if not key.startswith("batch-start:") and key not in live:
                self.runtime.forget(key)
        by_pool = {
            p["name"].lower() + "|" + pool_model.account_id_of(p["id"]).lower(): p for p in pools
        }
        started = [t for t in tasks if t["state"] in ("preparing", "running")]
        waiting = sorted(
            (t for t in tasks if t["state"] == "active"), key=lambda t: t["creationTime"]
        )
        for task in started + waiting:
            try:
                with ctx.store.transaction():
                    self._step(task["key"], by_pool, now)
            except Exception:  # noqa: BLE001 - one broken task must not block the others
                log.exception("Batch runner failed on task %s", task["key"])
        settle_jobs(ctx, now)

    # -- one task ---------------------------------------------------------------------------------

    def _step(self, key: str, pools: dict[str, dict[str, Any]], now: float) -> None:
        ctx = self.ctx
        task = ctx.store.get(jobs.TASK_KIND, key)
        if task is None or task["state"] == "completed":
            return
        before = repr(task)
        job = ctx.store.get(jobs.JOB_KIND, jobs.job_key(task["account_id"], task["job_id"]))
        pool = pools.get((job or {}).get("poolId", "").lower() + "|" + task["account_id"].lower())
        if task["terminate_reason"]:
            self._terminate(task, now)
        elif task["state"] == "active":
            if job and job["state"] == "active" and pool is not None:
                self._place(task, job, pool, now)
        else:
            node = node_pool.get(ctx, task["node_id"])
            if (
                node is None
                or node["released_at"] is not None
                or node["batch"]["state"] == "unusable"
            ):
                self._node_lost(task, node, now)
            elif task["state"] == "preparing":
                self._prepare(task, job, pool, node, now)
            else:
                self._watch(task, job, pool, node, now)
        if repr(task) != before:
            jobs.save_task(ctx, task, now)

    def _place(self, task: dict, job: dict, pool: dict, now: float) -> None:
        ctx = self.ctx
        free = nodes.schedulable(ctx, pool["id"])
        if not free:
            return
        image_ref = (task["containerSettings"] or {}).get("imageName")
        image = (
            image_pull.resolve(ctx, image_ref, pool_model.registry_identity(pool, image_ref))
            if image_ref
            else None
        )
        free.sort(key=lambda n: (not (image and image_pull.is_cached(n, image)), n["ready_at"]))
        node = free[0]
        node.update(run_id=task["key"], state="running", idle_since=None)
        node["jobs"].append(task["key"])
        nodes.set_state(node, "running", now)
        node_pool.save(ctx, node)
        fault = workload_faults.take_fault(ctx, f"{task['job_id']}/{task['id']}")
        pull_s = image_pull.pull_seconds(ctx, node, image) if image and image.error is None else 0.0
        delay_s = fault["delay_s"] if fault and fault["fault"] == "slow_start" else 0.0
        task.update(
            node_id=node["id"],
            pool_id=pool["name"],
            fault=fault,
            prepare_until=now + pull_s + delay_s,
            image_digest=image.digest if image else None,
            image_info=image.record if image else None,
            pending_failure=None,
        )
        if image is not None and image.error is not None:
            task["pending_failure"] = _failure(
                "ContainerPullImageFailed",
                f"The container image '{image_ref}' could not be pulled: {image.error.message}",
            )
        elif fault and fault["fault"] == "pull_fails":
            task["pending_failure"] = _failure(
                "ContainerPullImageFailed",
                f"The container image '{image_ref}' could not be pulled: the registry answered "
                "503 Service Unavailable (a transient error).",
                "serverError",
            )
        info = task["executionInfo"]
        if info["startTime"] is not None:
            info["lastRetryTime"] = now
        info["startTime"] = now
        jobs.set_task_state(task, "preparing", now)

    def _prepare(self, task: dict, job: dict, pool: dict, node: dict, now: float) -> None:
        if now < task["prepare_until"]:
            return
        if task["pending_failure"]:
            self._complete(task, node, now, None, task["pending_failure"])
            return
        image_pull.pulled(self.ctx, node["id"], task.get("image_digest"))
        jobs.set_task_state(task, "running", now)
        task["attempt_started"] = now
        image_ref = (task["containerSettings"] or {}).get("imageName") or ""
        if containers.needs_nested_virtualization(image_ref):
            size = pool_model.size_of(pool["properties"])
            reason = containers.no_kvm_reason(
                size, pool_model.security_type(pool["properties"]), pool["name"]
            )
            if reason:
                path = jobs.task_dir(self.ctx, task) / "stdout.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as out:
                    out.write(
                        containers.KVM_UNAVAILABLE_LOG.format(
                            reason=reason.replace("Compute", "Pool")
                        )
                    )
                task["no_kvm_exit"] = True
                return
        if (task["fault"] or {}).get("fault") == "never_starts":
            return
        self._start_process(task, job, pool, node)

    def _watch(self, task: dict, job: dict, pool: dict, node: dict, now: float) -> None:
        key, fault = task["key"], task["fault"] or {}
        wall_s = pool_model.duration_s(
            task["constraints"]["maxWallClockTime"], jobs.MAX_DURATION, "maxWallClockTime"
        )
        if task.pop("no_kvm_exit", False):
            self._exited(task, job, node, now, 1)
            return
        if now - task["executionInfo"]["startTime"] >= wall_s:
            self.runtime.forget(key)
            self._complete(
                task,
                node,
                now,
                None,
                _failure(
                    "MaxWallClockTimeExceeded",
                    f"The task ran longer than its maxWallClockTime "
                    f"({task['constraints']['maxWallClockTime']}) and was terminated.",
                ),
            )
            return
        due = workload_faults.fault_due(
            fault,
            task,
            task["attempt_started"],
            now,
            lambda pattern: self.runtime.output_matches(key, pattern),
        )
        if fault.get("fault") == "preempt" and due:
            self.runtime.forget(key)
            node_pool.release(self.ctx, node, now, "preempted")
            nodes.set_state(node, "preempted", now)
            _note_recent_task(node["batch"], task)
            node_pool.save(self.ctx, node)
            self._requeue(task, now)
            return
        if not self.runtime.has(key):
            if fault.get("fault") != "never_starts":
                self._requeue(task, now)
            return
        if fault.get("fault") == "crash" and due:
            self.runtime.kill(key)
        if (
            workload_faults.freezes_process(task["fault"], task["commandLine"])
            and not task["frozen"]
            and due
        ):
            self.runtime.signal(key, signal.SIGSTOP)
            task["frozen"] = True
        code = self.runtime.exit_code(key)
        if code is not None:
            self.runtime.forget(key)
            self._exited(task, job, node, now, code)

    def _exited(self, task: dict, job: dict, node: dict, now: float, code: int) -> None:
        retries = task["constraints"]["maxTaskRetryCount"]
        info = task["executionInfo"]
        if code != 0 and (retries == -1 or info["retryCount"] < retries):
            info["retryCount"] += 1
            self._release_node(task, node, now, succeeded=False)
            task.update(node_id=None, fault=None, fault_armed_at=None, frozen=False)
            jobs.set_task_state(task, "active", now)
            return
        self._complete(task, node, now, code, None if code == 0 else EXIT_FAILURE)
        action = job_action(task["exitConditions"], code)
        if action == "terminate" and job and job["state"] == "active":
            job["executionInfo"]["terminateReason"] = "TaskFailed" if code else "TaskSucceeded"
            terminate_job(self.ctx, job, now)

    def _complete(
        self, task: dict, node: dict | None, now: float, code: int | None, failure: dict | None
    ) -> None:
        info = task["executionInfo"]
        info.update(
            endTime=now,
            exitCode=code,
            failureInfo=failure,
            result="failure" if failure else "success",
        )
        jobs.set_task_state(task, "completed", now)
        if node is not None:
            self._release_node(task, node, now, succeeded=failure is None)

    def _release_node(self, task: dict, node: dict, now: float, succeeded: bool) -> None:
        node = node_pool.get(self.ctx, node["id"]) or node
        info = node["batch"]
        info["tasks_run"] += 1
        info["tasks_succeeded"] += int(succeeded)
        _note_recent_task(info, task)
        node_pool.save(self.ctx, node)
        if node["released_at"] is None and node["run_id"] == task["key"]:
            node_pool.finish(self.ctx, node["id"], now)
            node = node_pool.get(self.ctx, node["id"])
            if node["batch"]["state"] == "running":
                nodes.set_state(node, "idle", now)
                node_pool.save(self.ctx, node)

    def _requeue(self, task: dict, now: float) -> None:
        self.runtime.forget(task["key"])
        info = task["executionInfo"]
        info["requeueCount"] += 1
        info["lastRequeueTime"] = now
        task.update(
            node_id=None, fault=None, fault_armed_at=None, frozen=False, pending_failure=None
        )
        jobs.set_task_state(task, "active", now)

    def _node_lost(self, task: dict, node: dict | None, now: float) -> None:
        removal = (node or {}).get("batch", {}).get("removal")
        if node is not None and "batch" in node:
            _note_recent_task(node["batch"], task)
            if node["run_id"] == task["key"] and node["released_at"] is None:
                node["run_id"] = None
            node_pool.save(self.ctx, node)
        if removal == "terminate":
            self.runtime.forget(task["key"])
            self._complete(
                task, None, now, None, _failure("TaskEnded", "Task Was Ended by Node Removal")
            )
            return
        self._requeue(task, now)

    def _terminate(self, task: dict, now: float) -> None:
        key = task["key"]
        if self.runtime.has(key) and self.runtime.exit_code(key) is None:
            if task["kill_sent_at"] is None:
                self.runtime.terminate(key)
                task["kill_sent_at"] = now
                return
            if now - task["kill_sent_at"] < TERMINATE_GRACE_S:
                return
        code = self.runtime.exit_code(key) if self.runtime.has(key) else None
        self.runtime.forget(key)
        node = node_pool.get(self.ctx, task["node_id"]) if task["node_id"] else None
        if task["state"] == "active":
            node = None
        self._complete(task, node, now, code, _failure("TaskEnded", task["terminate_reason"]))
        task["terminate_reason"] = None

    def _start_process(self, task: dict, job: dict, pool: dict, node: dict) -> None:
        ctx = self.ctx
        workdir = jobs.task_dir(ctx, task) / "wd"
        account = ctx.store.get_resource(pool_model.account_id_of(pool["id"]))
        image_ref = task["containerSettings"]["imageName"] if task["containerSettings"] else ""
        platform = {
            **nodes.node_environment(ctx, pool, node),
            "AZ_BATCH_JOB_ID": task["job_id"],
            "AZ_BATCH_TASK_ID": task["id"],
            "AZ_BATCH_TASK_WORKING_DIR": str(workdir),
            "AZ_BATCH_TASK_DIR": str(workdir.parent),
            "AZ_BATCH_ACCOUNT_URL": f"https://{accounts.endpoint_host(account)}",
        }
        identities = (pool.get("identity") or {}).get("userAssignedIdentities") or {}
        if identities:
            principal = next(iter(identities.values()))["principalId"]
            platform["IDENTITY_ENDPOINT"] = f"{ctx.endpoint}/msi/token"
            platform["IDENTITY_HEADER"] = bind_workload_identity(ctx, principal)
        env = containers.container_environment(
            ctx.settings.state_dir,
            workdir,
            containers.image_environment(image_ref, task.get("image_info") or {})
            if image_ref
            else {},
            containers.waa_vm_environment(
                image_ref, pool_model.size_of(pool["properties"]), node_pool.timing(ctx)
            ),
            {s["name"]: str(s.get("value", "")) for s in job["commonEnvironmentSettings"]},
            {s["name"]: str(s.get("value", "")) for s in task["environmentSettings"]},
            workload_faults.fault_environment(task["fault"], task["commandLine"]),
            platform,
        )
        out_dir = jobs.task_dir(ctx, task)
        out_dir.mkdir(parents=True, exist_ok=True)
        stderr = shlex.quote(str(out_dir / "stderr.txt"))
        self.runtime.start(
            task["key"],
            f"exec 2>>{stderr}\n{task['commandLine']}",
            env,
            workdir,
            out_dir / "stdout.txt",
        )


def _note_recent_task(node_info: dict[str, Any], task: dict[str, Any]) -> None:
    """The node's ``recentTasks``: the last ten tasks that ended or were requeued on it."""
    recent = [key for key in node_info["recent_tasks"] if key != task["key"]]
    node_info["recent_tasks"] = (recent + [task["key"]])[-RECENT_TASKS:]


def terminate_job(ctx: Context, job: dict[str, Any], now: float) -> None:
    """The job ends: tasks not yet completed are terminated (by the runner's next tick)."""
    jobs.set_job_state(job, "terminating", now)
    for task in jobs.tasks_of(ctx, job["account_id"], job["id"]):
        if task["state"] != "completed" and not task["terminate_reason"]:
            task["terminate_reason"] = "Task Was Ended by Job Termination"
            jobs.save_task(ctx, task, now)
    job["executionInfo"]["terminateReason"] = (
        job["executionInfo"]["terminateReason"] or "UserTerminate"
    )
    jobs.save_job(ctx, job, now)


def settle_jobs(ctx: Context, now: float) -> None:
    """A terminating job completes once its tasks have."""
    for job in ctx.store.values(jobs.JOB_KIND):
        tasks = jobs.tasks_of(ctx, job["account_id"], job["id"])
        done = all(t["state"] == "completed" for t in tasks)
        if (
            job["state"] == "active"
            and job["onAllTasksComplete"] == "terminatejob"
            and tasks
            and done
        ):
            job["executionInfo"]["terminateReason"] = "AllTasksComplete"
            jobs.set_job_state(job, "terminating", now)
        if job["state"] == "terminating" and done:
            jobs.set_job_state(job, "completed", now)
            job["executionInfo"]["endTime"] = now
            jobs.save_job(ctx, job, now)
