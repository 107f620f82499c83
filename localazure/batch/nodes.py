"""A Batch pool's compute nodes, on the shared node pool (``localazure.nodes.pool``).

Every tick each pool's live nodes move towards its resize targets (per priority), within the
account's core quota (``accounts.CoreQuota``: a node that does not fit ends the resize with
Batch's ``AccountCoreQuotaReached`` or ``AccountLowPriorityCoreQuotaReached``). A node goes
through Batch's states: ``creating`` (the VM is allocated; the shared pool's provisioning time),
``starting`` (the pool's ``containerImageNames`` are pulled, by size, as the identity the
pool's container registry entry names, AcrPull enforced; an image the node already holds — a
custom image the image was baked into — is not pulled), ``waitingForStartTask`` (the start task
runs when ``waitForSuccess``: its resource files first, ``resource_files``), then
``idle``/``running``. A failed prefetch makes the node
``unusable``; a failed start task with ``waitForSuccess`` makes it ``startTaskFailed``.

Node faults (admin API): ``unusable`` (a ready node becomes unusable), ``start_task_fails``
(the start task exits 1), ``preempt`` (a low-priority node is preempted: released, listed as
``preempted``). What happens to a task whose node is lost is the task runner's business.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid
from pathlib import Path
from typing import Any

from localazure.batch import accounts, pool_model, resource_files
from localazure.batch.pool_model import account_id_of
from localazure.compute import sandbox
from localazure.core.context import Context
from localazure.nodes import containers, image_pull
from localazure.nodes import pool as node_pool
from localazure.nodes.containers import ContainerRuntime

FAULT_KIND = "batch-node-fault"
PRELOADED_KIND = "batch-preloaded-image"
NODE_FAULTS = ("unusable", "start_task_fails", "preempt")
PRIORITIES = (("Dedicated", "targetDedicatedNodes"), ("LowPriority", "targetLowPriorityNodes"))
QUOTA_HELP = "https://learn.microsoft.com/azure/batch/batch-quota-limit"


# -- node records ---------------------------------------------------------------------------------


def pool_nodes(ctx: Context, pool_id: str, include_preempted: bool = True) -> list[dict[str, Any]]:
    """The pool's nodes as the data plane lists them: live ones, and preempted ones."""
    found = []
    for node in ctx.store.values(node_pool.NODE_KIND):
        if node["compute_id"].lower() != pool_id.lower() or "batch" not in node:
            continue
        if node["released_at"] is None or (
            include_preempted and node["release_reason"] == "preempted"
        ):
            found.append(node)
    return sorted(found, key=lambda n: n["acquired_at"])


def live(ctx: Context, pool_id: str, priority: str | None = None) -> list[dict[str, Any]]:
    return [
        n
        for n in node_pool.active(ctx, pool_id)
        if "batch" in n and (priority is None or n["priority"] == priority)
    ]


def state(node: dict[str, Any]) -> str:
    """The node's state as the data plane spells it (``waitingforstarttask``)."""
    if node["released_at"] is not None:
        return "preempted" if node["release_reason"] == "preempted" else "leavingpool"
    return node["batch"]["state"].lower()


def schedulable(ctx: Context, pool_id: str) -> list[dict[str, Any]]:
    return [n for n in live(ctx, pool_id) if n["batch"]["state"] == "idle" and not n["run_id"]]


def set_state(node: dict[str, Any], value: str, now: float) -> None:
    if node["batch"]["state"] != value:
        node["batch"]["state"] = value
        node["batch"]["state_time"] = now


def counts(ctx: Context, pool_id: str) -> tuple[int, int]:
    nodes = live(ctx, pool_id)
    dedicated = sum(1 for n in nodes if n["priority"] == "Dedicated")
    return dedicated, len(nodes) - dedicated


def node_dir(ctx: Context, node: dict[str, Any]) -> Path:
    return ctx.settings.state_dir / "batch" / "nodes" / node["id"]


# -- preloaded images (custom VM images holding container images) ---------------------------------


def preloaded_digests(ctx: Context, image_id: str | None) -> list[str]:
    """Digests a custom VM image holds: the images its source VM had pulled (a managed image
    captured by the Compute service holds a copy of that VM's disk, Docker's image store
    included), plus what the admin API recorded for image ids Compute does not hold (gallery
    images)."""
    if not image_id:
        return []
    digests: list[str] = []
    image = ctx.store.get_resource(image_id)
    if image is not None and image.get("_disk"):
        store = sandbox.disk_dir(ctx, image["_disk"]) / "var" / "lib" / "docker" / "images.json"
        if store.is_file():
            digests += [i["digest"] for i in json.loads(store.read_text()) if i.get("digest")]
    record = ctx.store.get(PRELOADED_KIND, image_id.lower())
    digests += [d for d in (record["digests"] if record else []) if d not in digests]
    return digests


def record_preloaded(ctx: Context, image_id: str, digests: list[str]) -> None:
    ctx.store.put(PRELOADED_KIND, image_id.lower(), {"image_id": image_id, "digests": digests})


# -- quota ----------------------------------------------------------------------------------------


def quota_error(ctx: Context, pool: dict[str, Any], priority: str) -> dict[str, Any] | None:
    """Batch's resize error if one more node of the pool does not fit the account's quota."""
    account = ctx.store.get_resource(account_id_of(pool["id"]))
    limits = accounts.quota(ctx, account)
    size = pool_model.size_of(pool["properties"])
    prefix = account["id"].lower() + "/pools/"
    in_use = [
        n
        for n in node_pool.active(ctx)
        if n["compute_id"].lower().startswith(prefix) and "batch" in n
    ]
    if priority == "LowPriority":
        used = sum(n["vcpus"] for n in in_use if n["priority"] == "LowPriority")
        if used + size.vcpus > limits.low_priority:
            return _quota_error(
                "AccountLowPriorityCoreQuotaReached",
                "The specified account has reached low priority core quota",
                limits.low_priority,
                used,
                size.vcpus,
                "LowPriority",
            )
        return None
    dedicated = [n for n in in_use if n["priority"] != "LowPriority"]
    family_used = sum(n["vcpus"] for n in dedicated if n["family"] == size.family)
    if family_used + size.vcpus > limits.family_limit(size.family):
        return _quota_error(
            "AccountCoreQuotaReached",
            f"The specified account has reached VM core quota for the {size.family}",
            limits.family_limit(size.family),
            family_used,
            size.vcpus,
            size.family,
        )
    used = sum(n["vcpus"] for n in dedicated)
    if used + size.vcpus > limits.dedicated:
        return _quota_error(
            "AccountCoreQuotaReached",
            "The specified account has reached core quota",
            limits.dedicated,
            used,
            size.vcpus,
            "Dedicated",
        )
    return None


def _quota_error(
    code: str, message: str, limit: int, used: int, wanted: int, which: str
) -> dict[str, Any]:
    return {
        "code": code,
        "message": f"{message}: quota {limit} cores, in use {used}, one more node needs "
        f"{wanted}. Request more quota for the Batch account ({QUOTA_HELP}) or lower the "
        "pool's target node count.",
        "values": [
            {"name": "QuotaType", "value": which},
            {"name": "CoreQuota", "value": str(limit)},
            {"name": "CoresInUse", "value": str(used)},
        ],
    }


# -- node faults ----------------------------------------------------------------------------------


def add_fault(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("fault")
    if kind not in NODE_FAULTS:
        raise ValueError(f"'fault' must be one of {list(NODE_FAULTS)}, not {kind!r}")
    pattern = spec.get("pool", ".*")
    try:
        re.compile(pattern)
    except (re.error, TypeError) as err:
        raise ValueError(f"'pool' must be a regular expression: {err}") from None
    times = spec.get("times", 1)
    after_s = spec.get("after_s", 0.5)
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ValueError(f"'times' must be a whole number >= 1, not {times!r}")
    if not isinstance(after_s, int | float) or isinstance(after_s, bool) or after_s < 0:
        raise ValueError(f"'after_s' must be a number of seconds >= 0, not {after_s!r}")
    fault = {
        "id": uuid.uuid4().hex[:12],
        "fault": kind,
        "pool": pattern,
        "times": times,
        "after_s": float(after_s),
        "hits": 0,
    }
    ctx.store.put(FAULT_KIND, fault["id"], fault)
    return fault


def list_faults(ctx: Context) -> list[dict[str, Any]]:
    return ctx.store.values(FAULT_KIND)


def clear_faults(ctx: Context) -> None:
    ctx.store.delete_prefix(FAULT_KIND, "")


def _take_fault(ctx: Context, kind: str, pool_name: str) -> dict[str, Any] | None:
    for fault in list_faults(ctx):
        if fault["fault"] == kind and fault["times"] > 0 and re.search(fault["pool"], pool_name):
            fault["times"] -= 1
            fault["hits"] += 1
            ctx.store.put(FAULT_KIND, fault["id"], fault)
            return fault
    return None


# -- the tick -------------------------------------------------------------------------------------


class NodeLifecycle:
    """Moves every Batch pool's nodes one step; runs start tasks on ``runtime``."""

    def __init__(self, ctx: Context, runtime: ContainerRuntime):
        self.ctx = ctx
        self.runtime = runtime

    def tick(self, pools: list[dict[str, Any]], now: float) -> None:
        for pool in pools:
            with self.ctx.store.transaction():
                self._resize(pool, now)
                for node in live(self.ctx, pool["id"]):
                    before = repr(node)
                    self._advance(pool, node, now)
                    if repr(node) != before:
                        node_pool.save(self.ctx, node)
                self._settle(pool, now)

    # -- resize -----------------------------------------------------------------------------------

    def _resize(self, pool: dict[str, Any], now: float) -> None:
        ctx = self.ctx
        operation = pool_model.resize(ctx, pool["id"])
        if operation is None:
            return
        for priority, field in PRIORITIES:
            target = operation[field]
            nodes = live(ctx, pool["id"], priority)
            while len(nodes) > target:
                node = self._pick_to_remove(nodes)
                node["batch"]["removal"] = operation["nodeDeallocationOption"]
                node_pool.release(ctx, node, now, "scaled down")
                nodes.remove(node)
            if operation["state"] != "resizing" and operation["errors"]:
                continue  # a resize that ended short keeps what it got; a lost node is replaced
            while len(nodes) < target:
                error = quota_error(ctx, pool, priority)
                if error is not None:
                    if error not in operation["errors"]:
                        operation["errors"].append(error)
                    break
                nodes.append(self._provision(pool, priority, target, now))
        pool_model.save_resize(ctx, pool["id"], operation)

    @staticmethod
    def _pick_to_remove(nodes: list[dict[str, Any]]) -> dict[str, Any]:
        # Nodes doing nothing go first: not yet started, unusable, idle, then running ones.
        order = {"creating": 0, "starting": 0, "unusable": 0, "startTaskFailed": 0, "idle": 1}
        return sorted(nodes, key=lambda n: (order.get(n["batch"]["state"], 2), -n["acquired_at"]))[
            0
        ]

    def _provision(self, pool: dict[str, Any], priority: str, target: int, now: float) -> dict:
        spec = pool_model.node_spec(pool, priority, target)
        node = node_pool.provision(self.ctx, spec, now)
        node["batch"] = {
            "state": "creating",
            "state_time": now,
            "pull_until": None,
            "pull_error": None,
            "start_task": None,
            "errors": [],
            "fault": None,
            "tasks_run": 0,
            "tasks_succeeded": 0,
            "recent_tasks": [],
            "removal": None,
        }
        node_pool.save(self.ctx, node)
        return node

    def _settle(self, pool: dict[str, Any], now: float) -> None:
        """A resize is over when every wanted node is allocated, or quota stopped it."""
        operation = pool_model.resize(self.ctx, pool["id"])
        if operation is None or operation["state"] != "resizing":
            return
        dedicated, low = counts(self.ctx, pool["id"])
        creating = any(n["batch"]["state"] == "creating" for n in live(self.ctx, pool["id"]))
        reached = (
            dedicated >= operation["targetDedicatedNodes"]
            and low >= operation["targetLowPriorityNodes"]
        )
        if (reached or operation["errors"]) and not creating:
            operation.update(state="steady", transitionTime=now)
            pool_model.save_resize(self.ctx, pool["id"], operation)

    # -- one node ---------------------------------------------------------------------------------

    def _advance(self, pool: dict[str, Any], node: dict[str, Any], now: float) -> None:
        info = node["batch"]
        if info["state"] == "creating" and now >= node["ready_at"]:
            self._start_node(pool, node, now)
        if info["state"] == "starting" and now >= info["pull_until"]:
            self._after_pull(pool, node, now)
        if info["start_task"] and info["start_task"]["state"] == "running":
            self._watch_start_task(pool, node, now)
        self._node_faults(pool, node, now)

    def _start_node(self, pool: dict[str, Any], node: dict[str, Any], now: float) -> None:
        """The VM is up: the pool's container images are pulled (those it holds are not)."""
        ctx = self.ctx
        for digest in preloaded_digests(ctx, pool_model.custom_image_id(pool)):
            if digest not in node["images"]:
                node["images"].append(digest)
        pull_s = 0.0
        pulled = []
        for ref in pool_model.container_images(pool):
            image = image_pull.resolve(ctx, ref, pool_model.registry_identity(pool, ref))
            if image.error is not None:
                node["batch"]["pull_error"] = {
                    "code": "ContainerImagePullFailed",
                    "message": f"The container image '{ref}' could not be pulled during node "
                    f"start: {image.error.message}",
                    "errorDetails": [{"name": "ImageName", "value": ref}],
                }
                break
            pull_s += image_pull.pull_seconds(ctx, node, image)
            pulled.append(image.digest)
        node["batch"]["pull_until"] = node["ready_at"] + pull_s
        node["batch"]["pulling"] = pulled
        node["state"] = "preparing"
        set_state(node, "starting", now)

    def _after_pull(self, pool: dict[str, Any], node: dict[str, Any], now: float) -> None:
        info = node["batch"]
        if info["pull_error"]:
            info["errors"].append(info["pull_error"])
            set_state(node, "unusable", now)
            return
        for digest in info.get("pulling") or []:
            if digest and digest not in node["images"]:
                node["images"].append(digest)
        start_task = pool["properties"].get("startTask")
        if start_task and start_task.get("commandLine"):
            self._run_start_task(pool, node, start_task, now)
            if start_task.get("waitForSuccess", True):
                if info["start_task"]["state"] == "running":
                    set_state(node, "waitingForStartTask", now)
                else:
                    set_state(node, "startTaskFailed", now)
                return
        self._ready(node, now)

    def _ready(self, node: dict[str, Any], now: float) -> None:
        node.update(state="idle", idle_since=now)
        set_state(node, "idle", now)

    def _run_start_task(
        self, pool: dict[str, Any], node: dict[str, Any], start_task: dict[str, Any], now: float
    ) -> None:
        info = node["batch"]
        previous = info["start_task"]
        fault = (
            _take_fault(self.ctx, "start_task_fails", pool["name"]) if previous is None else None
        )
        command = start_task["commandLine"]
        if fault or (previous and previous.get("faulted")):
            command = "echo 'start task failed (injected fault)' >&2; exit 1"
        workdir = node_dir(self.ctx, node) / "startup" / "wd"
        info["start_task"] = {
            "state": "running",
            "startTime": now,
            "endTime": None,
            "exitCode": None,
            "retryCount": previous["retryCount"] + 1 if previous else 0,
            "lastRetryTime": now if previous else None,
            "failureInfo": None,
            "result": None,
            "faulted": bool(fault or (previous and previous.get("faulted"))),
        }
        try:
            resource_files.materialize(self.ctx, pool, start_task, workdir)
        except resource_files.ResourceFileError as err:
            # The command never runs (nor does the emulator retry the start task).
            info["start_task"].update(
                state="completed", endTime=now, result="failure", failureInfo=err.failure
            )
            return
        env = containers.container_environment(
            self.ctx.settings.state_dir,
            workdir,
            {
                s["name"]: str(s.get("value", ""))
                for s in start_task.get("environmentSettings") or []
            },
            node_environment(self.ctx, pool, node),
        )
        stderr = node_dir(self.ctx, node) / "startup" / "stderr.txt"
        stderr.parent.mkdir(parents=True, exist_ok=True)
        self.runtime.start(
            start_task_key(node),
            f"exec 2>>{shlex.quote(str(stderr))}\n{command}",
            env,
            workdir,
            node_dir(self.ctx, node) / "startup" / "stdout.txt",
        )

    def _watch_start_task(self, pool: dict[str, Any], node: dict[str, Any], now: float) -> None:
        key = start_task_key(node)
        info = node["batch"]
        task = info["start_task"]
        if not self.runtime.has(key):
            code = 137
        else:
            code = self.runtime.exit_code(key)
            if code is None:
                return
            self.runtime.forget(key)
        start_task = pool["properties"].get("startTask") or {}
        task.update(state="completed", endTime=now, exitCode=code)
        if code == 0:
            task["result"] = "success"
            if info["state"] == "waitingForStartTask":
                self._ready(node, now)
            return
        retries = start_task.get("maxTaskRetryCount", 0)
        if retries == -1 or task["retryCount"] < retries:
            self._run_start_task(pool, node, start_task, now)
            if (
                info["start_task"]["state"] == "completed"
                and info["state"] == "waitingForStartTask"
            ):
                set_state(node, "startTaskFailed", now)
            return
        task["result"] = "failure"
        task["failureInfo"] = {
            "category": "userError",
            "code": "FailureExitCode",
            "message": "The task exited with an exit code representing a failure",
            "details": [{"name": "Message", "value": f"The start task exited with code {code}"}],
        }
        if info["state"] == "waitingForStartTask":
            set_state(node, "startTaskFailed", now)

    def _node_faults(self, pool: dict[str, Any], node: dict[str, Any], now: float) -> None:
        info = node["batch"]
        if info["state"] not in ("idle", "running"):
            return
        if info["fault"] is None:
            fault = _take_fault(self.ctx, "unusable", pool["name"])
            if fault is None and node["priority"] == "LowPriority":
                fault = _take_fault(self.ctx, "preempt", pool["name"])
            if fault is None:
                return
            info["fault"] = {**fault, "at": now + fault["after_s"]}
        fault = info["fault"]
        if fault.get("done") or now < fault["at"]:
            return
        fault["done"] = True
        if fault["fault"] == "preempt":
            node_pool.release(self.ctx, node, now, "preempted")
            set_state(node, "preempted", now)
        else:
            info["errors"].append(
                {
                    "code": "NodeUnusable",
                    "message": "The node became unusable (injected fault): its VM stopped "
                    "responding to the Batch service.",
                    "errorDetails": [],
                }
            )
            node["state"] = "idle"
            set_state(node, "unusable", now)


def start_task_key(node: dict[str, Any]) -> str:
    return f"batch-start:{node['id']}"


def node_environment(ctx: Context, pool: dict[str, Any], node: dict[str, Any]) -> dict[str, str]:
    """Batch's node-level environment variables."""
    account = pool["id"].split("/batchAccounts/", 1)[1].split("/", 1)[0]
    root = node_dir(ctx, node)
    return {
        "AZ_BATCH_ACCOUNT_NAME": account,
        "AZ_BATCH_ACCOUNT_URL": f"https://{account}.{pool['location']}.batch.azure.com",
        "AZ_BATCH_POOL_ID": pool["name"],
        "AZ_BATCH_NODE_ID": node["id"],
        "AZ_BATCH_NODE_IS_DEDICATED": "true" if node["priority"] == "Dedicated" else "false",
        "AZ_BATCH_NODE_ROOT_DIR": str(root),
        "AZ_BATCH_NODE_SHARED_DIR": str(root / "shared"),
        "AZ_BATCH_NODE_STARTUP_DIR": str(root / "startup"),
        "REQUESTS_CA_BUNDLE": str(ctx.settings.ca_bundle),
        "SSL_CERT_FILE": str(ctx.settings.ca_bundle),
    }
