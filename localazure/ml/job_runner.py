"""Azure ML's job runner, ticked by the shared lifecycle loop (``localazure.nodes.lifecycle``).

Each tick it moves every run through its lifecycle (see ``jobs``) on the shared node parts:
nodes from the pool (``nodes.pool``), the image pull (``nodes.image_pull``), container processes
(``nodes.containers``, with the nested-virtualization rule) and workload faults
(``nodes.workload_faults``); it applies timeouts and scales the clusters' nodes. All state is in
the store; only the processes live in memory.

After a restart: queued and preparing jobs carry on; a job that was running (or finalizing
without an exit code) fails with ``NodeLost`` at the time the emulator stopped, since its process
did not survive; a job being cancelled becomes Canceled. Nodes stay allocated (they are VMs in
Azure) and scale down on their usual schedule, counted from when the emulator stopped.
"""

from __future__ import annotations

import json
import logging
import signal
from typing import Any

from localazure.core.context import Context
from localazure.identity import principals
from localazure.identity.routes import bind_workload_identity
from localazure.ml import computes, job_inputs, jobs, workspaces
from localazure.nodes import containers, image_pull, workload_faults
from localazure.nodes import pool as node_pool
from localazure.nodes.containers import ContainerRuntime
from localazure.nodes.pool import PoolSpec
from localazure.settings import REDIRECTED_SUFFIXES

log = logging.getLogger("localazure.ml")
CANCEL_GRACE_S = 2.0
WAITING = ("NotStarted", "Queued")
PULL_ERRORS = {
    "unauthorized": "ImagePullUnauthorized",
    "not_found": "ImageNotFound",
    "registry_not_found": "RegistryNotFound",
}


class JobRunner:
    """The ``Workloads`` of Azure ML: command jobs on AmlCompute clusters."""

    name = "ml"

    def __init__(self, ctx: Context, runtime: ContainerRuntime):
        self.ctx = ctx
        self.runtime = runtime

    def recover(self, stopped_at: float) -> None:
        """Settle the runs whose processes died with the previous emulator process."""
        for run in jobs.all_runs(self.ctx):
            lost = run["status"] == "Running" or (
                run["status"] == "Finalizing" and run["exit_code"] is None
            )
            if lost:
                jobs.fail(
                    run,
                    stopped_at,
                    "SystemError",
                    "NodeLost",
                    "The node running this job was lost: localazure restarted while the job "
                    "ran, and the job's container did not survive. Submit the job again.",
                )
            elif run["status"] == "CancelRequested":
                jobs.set_status(run, "Canceled", stopped_at)
            else:
                continue
            jobs.note(self.ctx, run, f"Job ended as {run['status']} after a restart")
            if run["node_id"]:
                node_pool.finish(self.ctx, run["node_id"], stopped_at)
            jobs.save_run(self.ctx, run)

    # -- one tick ---------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        ctx = self.ctx
        clusters = {c.id.lower(): c for c in computes.all_clusters(ctx)}
        runs = jobs.all_runs(ctx)
        live = {r["key"] for r in runs if r["status"] in jobs.ACTIVE}
        for key in self.runtime.running_keys():
            if key not in live:
                self.runtime.forget(key)
        waiting = [r for r in runs if r["status"] in WAITING]
        started = [r for r in runs if r["status"] in jobs.ACTIVE and r["status"] not in WAITING]
        # Jobs in flight first, so that nodes they free go to queued jobs in the same tick.
        for run in started + waiting:
            try:
                self._step(run["key"], clusters, now)
            except Exception:  # noqa: BLE001 - a broken run must not block the others
                log.exception("ML scheduler failed on run %s", run["key"])
        node_pool.scale(ctx, list(clusters.values()), now)

    def _step(self, key: str, clusters: dict[str, PoolSpec], now: float) -> None:
        with self.ctx.store.transaction():
            run = self.ctx.store.get(jobs.RUN_KIND, key)
            if run is None or run["status"] not in jobs.ACTIVE:
                return
            before = json.dumps(run, sort_keys=True)
            cluster = clusters.get(run["compute_id"].lower())
            if run["status"] == "CancelRequested":
                self._cancel(run, now)
            elif cluster is None:
                self._stop_process(run)
                jobs.fail(
                    run,
                    now,
                    "UserError",
                    "ComputeDeleted",
                    f"The compute target '{run['compute_id'].rsplit('/', 1)[-1]}' was deleted "
                    "while the job used it.",
                )
            else:
                self._advance(run, cluster, now)
            if json.dumps(run, sort_keys=True) != before:
                jobs.save_run(self.ctx, run)

    def _advance(self, run: dict[str, Any], cluster: PoolSpec, now: float) -> None:
        if run["status"] == "NotStarted":
            jobs.set_status(run, "Queued", now)
            jobs.note(self.ctx, run, f"Job queued on compute '{cluster.name}'")
        if run["status"] == "Queued":
            self._place(run, cluster, now)
        elif run["status"] == "Preparing":
            self._prepare(run, cluster, now)
        elif run["status"] == "Running":
            self._watch(run, cluster, now)
        elif run["status"] == "Finalizing":
            self._finalize(run, now)

    # -- states -----------------------------------------------------------------------------------

    def _place(self, run: dict[str, Any], cluster: PoolSpec, now: float) -> None:
        """Queued: get a node; on one, the job is Preparing (provisioning, then the pull)."""
        ctx = self.ctx
        workspace = ctx.store.get_resource(run["workspace_id"])
        image = image_pull.resolve(ctx, run["image"], workspaces.principal_of(workspace))
        pull_error = image.error
        node = node_pool.acquire(ctx, cluster, run["name"], image.digest, now)
        if node is None:
            return
        fault = workload_faults.take_fault(ctx, run["name"])
        if workload_faults.mark_overload(node, fault, run["name"], now):
            node_pool.save(ctx, node)
        cached = image_pull.is_cached(node, image)
        pull_s = image_pull.pull_seconds(ctx, node, image)
        delay_s = fault["delay_s"] if fault and fault["fault"] == "slow_start" else 0.0
        run.update(
            node_id=node["id"],
            fault=fault,
            image_info=image.record,
            image_digest=image.digest,
            prepare_until=max(now, node["ready_at"]) + pull_s + delay_s,
        )
        if pull_error is not None:
            run["pending_error"] = {
                "category": "UserError",
                "code": PULL_ERRORS.get(pull_error.reason, "ImagePullFailed"),
                "message": f"Failed to pull Docker image {run['image']}. {pull_error.message}",
            }
        elif fault and fault["fault"] == "pull_fails":
            run["pending_error"] = {
                "category": "SystemError",
                "code": "ImagePullTransientError",
                "message": f"Failed to pull Docker image {run['image']}: received unexpected "
                "HTTP status: 503 Service Unavailable from the registry. This is a transient "
                "error; retrying the job is expected to succeed.",
            }
        jobs.set_status(run, "Preparing", now)
        jobs.note(ctx, run, f"Node {node['id']} ({cluster.size.name}) allocated to the job")
        if now < node["ready_at"]:
            jobs.note(ctx, run, "Waiting for the node to be provisioned")
        jobs.note(
            ctx,
            run,
            f"Image {run['image']} is cached on the node"
            if cached
            else f"Pulling image {run['image']}",
        )

    def _prepare(self, run: dict[str, Any], cluster: PoolSpec, now: float) -> None:
        """Preparing: once provisioning and the pull are over, the container starts."""
        if now < run["prepare_until"]:
            return
        ctx = self.ctx
        if run["pending_error"]:
            error = run["pending_error"]
            jobs.note(ctx, run, error["message"])
            jobs.fail(run, now, error["category"], error["code"], error["message"])
            node_pool.finish(ctx, run["node_id"], now)
            return
        image_pull.pulled(ctx, run["node_id"], run["image_digest"])
        jobs.note(ctx, run, "Image pulled; starting the container")
        jobs.set_status(run, "Running", now)
        fault = run["fault"]
        if containers.needs_nested_virtualization(run["image"]):
            reason = containers.no_kvm_reason(cluster.size, cluster.security_type, cluster.name)
            if reason:
                self._exit_without_kvm(run, reason, now)
                return
        if fault and fault["fault"] == "never_starts":
            return
        self._start_process(run, cluster, now)

    def _watch(self, run: dict[str, Any], cluster: PoolSpec, now: float) -> None:
        """Running: watch the process, the timeout and the faults that strike while running."""
        ctx = self.ctx
        key, fault = run["key"], run["fault"] or {}
        elapsed = now - run["start_time"]
        if run["timeout_s"] is not None and elapsed >= run["timeout_s"]:
            self._stop_process(run)
            jobs.fail(
                run,
                now,
                "UserError",
                "JobTimeout",
                f"The job ran longer than the timeout of {run['timeout_s']:g} seconds set in "
                "limits.timeout and was terminated.",
            )
            jobs.note(ctx, run, "Job terminated: limits.timeout reached")
            node_pool.finish(ctx, run["node_id"], now)
            return
        due = workload_faults.fault_due(
            fault,
            run,
            run["start_time"],
            now,
            lambda pattern: self.runtime.output_matches(key, pattern),
        )
        if fault.get("fault") == "preempt" and due:
            self._stop_process(run)
            node = node_pool.get(ctx, run["node_id"])
            if node is not None:
                node_pool.release(ctx, node, now, "preempted")
            jobs.fail(
                run,
                now,
                "SystemError",
                "NodePreempted",
                f"The job's node {run['node_id']} was preempted: Azure reclaimed the "
                "low-priority VM while the job ran. The job's process was killed; submit the "
                "job again (or use dedicated nodes).",
            )
            jobs.note(ctx, run, "Node preempted")
            return
        if not self.runtime.has(key):
            if run["process_started_at"] is not None:
                jobs.fail(run, now, "SystemError", "NodeLost", "The job's container was lost.")
                node_pool.finish(ctx, run["node_id"], now)
            return
        if fault.get("fault") == "crash" and due:
            self.runtime.kill(key)
        if (
            workload_faults.freezes_process(run["fault"], self._command(run))
            and not run["frozen"]
            and due
        ):
            self.runtime.signal(key, signal.SIGSTOP)
            run["frozen"] = True
        code = self.runtime.exit_code(key)
        if code is not None:
            self.runtime.forget(key)
            run.update(exit_code=code, finalize_until=now + node_pool.timing(ctx).finalize())
            jobs.set_status(run, "Finalizing", now)
            jobs.note(ctx, run, f"Container exited with code {code}")

    def _finalize(self, run: dict[str, Any], now: float) -> None:
        if now < run["finalize_until"]:
            return
        if run["pending_error"]:
            error = run["pending_error"]
            jobs.fail(run, now, error["category"], error["code"], error["message"])
        elif run["exit_code"] == 0:
            jobs.set_status(run, "Completed", now)
        else:
            jobs.fail(
                run,
                now,
                "UserError",
                "UserProcessFailed",
                f"Execution failed. User process '/bin/bash' exited with status code "
                f"{run['exit_code']}. Please check log file 'user_logs/std_log.txt' for error "
                "details.",
            )
        jobs.note(self.ctx, run, f"Job {run['status']}")
        node_pool.finish(self.ctx, run["node_id"], now)

    def _cancel(self, run: dict[str, Any], now: float) -> None:
        key = run["key"]
        if self.runtime.has(key) and self.runtime.exit_code(key) is None:
            if run["kill_sent_at"] is None:
                self.runtime.terminate(key)
                run["kill_sent_at"] = now
            elif now - run["kill_sent_at"] >= CANCEL_GRACE_S:
                self.runtime.kill(key)
            return
        self.runtime.forget(key)
        jobs.set_status(run, "Canceled", now)
        jobs.note(self.ctx, run, "Job canceled")
        if run["node_id"]:
            node_pool.finish(self.ctx, run["node_id"], now)

    # -- helpers ----------------------------------------------------------------------------------

    def _command(self, run: dict[str, Any]) -> str:
        job = self.ctx.store.get_resource(run["job_id"])
        return job["properties"]["command"] if job else ""

    def _stop_process(self, run: dict[str, Any]) -> None:
        self.runtime.forget(run["key"])

    def _exit_without_kvm(self, run: dict[str, Any], reason: str, now: float) -> None:
        """What the WAA container does on a node without KVM: explain, and exit with code 1."""
        path = jobs.std_log_path(self.ctx, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(containers.KVM_UNAVAILABLE_LOG.format(reason=reason), encoding="utf-8")
        run["pending_error"] = {
            "category": "UserError",
            "code": "NestedVirtualizationUnavailable",
            "message": "Execution failed. User process exited with status code 1: nested "
            f"virtualization is not available on this node: /dev/kvm not found. {reason}",
        }
        run.update(
            exit_code=1,
            process_started_at=now,
            finalize_until=now + node_pool.timing(self.ctx).finalize(),
        )
        jobs.set_status(run, "Finalizing", now)

    def _start_process(self, run: dict[str, Any], cluster: PoolSpec, now: float) -> None:
        ctx = self.ctx
        job = ctx.store.get_resource(run["job_id"])
        workspace = ctx.store.get_resource(run["workspace_id"])
        props = job["properties"]
        workdir = jobs.run_dir(ctx, run) / "wd"
        identities = _compute_identities(ctx, run["compute_id"])
        principal_ids = [p["objectId"] for p in identities] or [workspaces.principal_of(workspace)]
        try:
            mounted = job_inputs.mount(
                ctx,
                workspace,
                props.get("inputs") or {},
                principal_ids,
                jobs.run_dir(ctx, run) / "cap" / "data-capability" / "wd",
            )
        except job_inputs.InputError as err:
            jobs.note(ctx, run, err.message)
            jobs.fail(run, now, "UserError", err.code, err.message)
            node_pool.finish(ctx, run["node_id"], now)
            return
        secret = bind_workload_identity(ctx, *principal_ids)
        rg = workspace["id"].split("/")[4]
        platform = {
            "AZUREML_RUN_ID": run["name"],
            "AZUREML_ARM_SUBSCRIPTION": ctx.subscription_id,
            "AZUREML_ARM_RESOURCEGROUP": rg,
            "AZUREML_ARM_WORKSPACE_NAME": workspace["name"],
            "AZUREML_ARM_PROJECT_NAME": props["experimentName"],
            "AZUREML_WORKSPACE_ID": run["workspace_uuid"],
            "AZUREML_SERVICE_ENDPOINT": ctx.endpoint,
            "AZUREML_DISCOVERY_SERVICE_ENDPOINT": workspaces.discovery_url(ctx),
            "AZUREML_NODE_COUNT": "1",
            "AZ_BATCHAI_CLUSTER_NAME": run["compute_id"].rsplit("/", 1)[-1],
            "AZ_BATCH_NODE_ID": run["node_id"],
            "IDENTITY_ENDPOINT": f"{ctx.endpoint}/msi/token",
            "IDENTITY_HEADER": secret,
            **({"DEFAULT_IDENTITY_CLIENT_ID": identities[0]["appId"]} if identities else {}),
            # The container's name resolution: Azure host names (vaults, registries) reach
            # the emulator, as they reach Azure from a real node.
            "LOCALAZURE_DNS": ",".join(REDIRECTED_SUFFIXES),
            "LOCALAZURE_ENDPOINT": ctx.endpoint,
            "REQUESTS_CA_BUNDLE": str(ctx.settings.ca_bundle),
            "SSL_CERT_FILE": str(ctx.settings.ca_bundle),
        }
        env = containers.container_environment(
            ctx.settings.state_dir,
            workdir,
            containers.image_environment(run["image"], run["image_info"] or {}),
            {str(k): str(v) for k, v in (props["environmentVariables"] or {}).items()},
            workload_faults.fault_environment(run["fault"], props["command"]),
            containers.waa_vm_environment(run["image"], cluster.size, node_pool.timing(ctx)),
            job_inputs.environment(mounted),
            platform,
        )
        command = job_inputs.substitute(props["command"], mounted)
        self.runtime.start(run["key"], command, env, workdir, jobs.std_log_path(ctx, run))
        run["process_started_at"] = now
        jobs.note(ctx, run, "Container started")


def _compute_identities(ctx: Context, compute_id: str) -> list[dict[str, Any]]:
    """The principals of the compute's user-assigned identities: what a job's managed-identity
    endpoint serves on an AmlCompute cluster (the first is ``DEFAULT_IDENTITY_CLIENT_ID``)."""
    compute = ctx.store.get_resource(compute_id) or {}
    found = []
    for identity_id in sorted((compute.get("identity") or {}).get("userAssignedIdentities") or {}):
        props = (ctx.store.get_resource(identity_id) or {}).get("properties") or {}
        principal = principals.get(ctx, props.get("principalId", ""))
        if principal:
            found.append(principal)
    return found
