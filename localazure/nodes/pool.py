"""The node pool every compute-backed service shares (AmlCompute clusters today; Batch pools,
VM scale sets later): scale-up for workloads, scale-down after the idle time, regional vCPU
quota, and the node-seconds each node was held (what a pool costs).

A pool is described by a ``PoolSpec`` (its id, VM size, priority, node bounds, idle time); the
service that owns the pool's resource builds it from its own wire format.

A node is a record (kind ``ml-node``) that lives from ``acquired_at`` (allocation starts) to
``released_at``; node-seconds are the time between, whatever the node did. Its ``state`` is one of
AML's node states (which Batch's node states map onto): ``preparing`` (being provisioned), ``idle``, ``running`` (holding a job) or,
once released, ``released``/``preempted``. A node keeps the digests of the images it pulled, so a
second job with the same image starts without a pull.

How long the simulated infrastructure takes (``Timing``) is a setting of the emulator:
``LOCALAZURE_ML_TIME_SCALE`` multiplies every simulated delay, and the admin API can change any
of them (``PUT /_localazure/ml/settings``).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from localazure.authorization.access import covers
from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.nodes.vm_catalog import VmSize, families, family_display_name

NODE_KIND = "ml-node"
TIMING_KIND = "ml-settings"
QUOTA_KIND = "ml-quota"
ALLOCATION_ERROR_KIND = "ml-allocation-error"
ACTIVE_STATES = ("preparing", "idle", "running")
QUOTA_HELP = (
    "Please read more about quota limits at "
    "https://docs.microsoft.com/en-us/azure/azure-supportability/per-vm-quota-requests."
)


@dataclass(frozen=True)
class PoolSpec:
    """What the pool needs to know about one pool of nodes (an AmlCompute cluster, say)."""

    id: str
    name: str
    location: str
    size: VmSize
    priority: str
    min_nodes: int
    max_nodes: int
    idle_s: float
    security_type: str


# -- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Real seconds the simulated infrastructure takes, before ``time_scale`` is applied."""

    time_scale: float = 1.0
    node_provision_s: float = 1.0
    pull_base_s: float = 0.2
    pull_s_per_gb: float = 0.1
    finalize_s: float = 0.2
    # The Windows VM's boot inside the WAA container (real WAA: minutes) on a 4-vCPU node;
    # more vCPUs boot faster, fewer slower.
    vm_boot_s: float = 1.0

    def provision(self) -> float:
        return self.node_provision_s * self.time_scale

    def pull(self, size_bytes: int) -> float:
        return (self.pull_base_s + size_bytes / 1e9 * self.pull_s_per_gb) * self.time_scale

    def finalize(self) -> float:
        return self.finalize_s * self.time_scale

    def vm_boot(self, vcpus: int) -> float:
        return self.vm_boot_s * self.time_scale * 4 / max(vcpus, 2)


def _default_timing() -> Timing:
    return Timing(time_scale=float(os.environ.get("LOCALAZURE_ML_TIME_SCALE", "1.0")))


def timing(ctx: Context) -> Timing:
    return replace(_default_timing(), **(ctx.store.get(TIMING_KIND, "timing") or {}))


def update_timing(ctx: Context, changes: dict[str, Any]) -> Timing:
    known = {f.name for f in fields(Timing)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known settings are {sorted(known)}")
    for name, value in changes.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"setting '{name}' must be a number >= 0, not {value!r}")
    stored = {**(ctx.store.get(TIMING_KIND, "timing") or {}), **changes}
    ctx.store.put(TIMING_KIND, "timing", stored)
    return timing(ctx)


@dataclass(frozen=True)
class Quota:
    """Regional vCPU quotas of the subscription, as AML counts them for clusters."""

    family_default: int = 100
    families: dict[str, int] = field(default_factory=dict)
    low_priority: int = 100
    total_dedicated: int = 500

    def family_limit(self, family: str) -> int:
        return self.families.get(family, self.family_default)


def quota(ctx: Context) -> Quota:
    return Quota(**(ctx.store.get(QUOTA_KIND, "quota") or {}))


def update_quota(ctx: Context, changes: dict[str, Any]) -> Quota:
    current = asdict(quota(ctx))
    unknown = sorted(set(changes) - set(current))
    if unknown:
        raise ValueError(f"unknown quota field(s) {unknown}; known fields are {sorted(current)}")
    for name in ("family_default", "low_priority", "total_dedicated"):
        if name in changes:
            current[name] = _limit(name, changes[name])
    for family, limit in (changes.get("families") or {}).items():
        if family not in families():
            raise ValueError(f"unknown VM family '{family}'; known families are {families()}")
        current["families"][family] = _limit(family, limit)
    ctx.store.put(QUOTA_KIND, "quota", current)
    return quota(ctx)


def _limit(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"quota '{name}' must be a whole number of vCPUs >= 0, not {value!r}")
    return value


# -- quota usage ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoreUsage:
    families: dict[str, int]
    dedicated: int
    low_priority: int


def cores_in_use(ctx: Context, location: str, exclude_compute: str | None = None) -> CoreUsage:
    """vCPUs held by live nodes in ``location`` (optionally leaving one cluster out)."""
    per_family: dict[str, int] = {}
    dedicated = low_priority = 0
    for node in active(ctx):
        if node["location"] != location or node["compute_id"] == exclude_compute:
            continue
        if node["priority"] == "LowPriority":
            low_priority += node["vcpus"]
        else:
            dedicated += node["vcpus"]
            per_family[node["family"]] = per_family.get(node["family"], 0) + node["vcpus"]
    return CoreUsage(per_family, dedicated, low_priority)


def quota_error(
    ctx: Context,
    location: str,
    size: VmSize,
    priority: str,
    additional: int,
    exclude_compute: str | None = None,
) -> AzureError | None:
    """Azure's ``QuotaExceeded`` if ``additional`` vCPUs of ``size`` do not fit, else None."""
    limits = quota(ctx)
    usage = cores_in_use(ctx, location)
    own = 0
    if exclude_compute:
        others = cores_in_use(ctx, location, exclude_compute)
        own = usage.dedicated - others.dedicated + usage.low_priority - others.low_priority
    additional = max(0, additional - own)
    if priority == "LowPriority":
        checks = [(limits.low_priority, usage.low_priority, "Total Cluster LowPriority Regional")]
    else:
        family_use = usage.families.get(size.family, 0)
        checks = [
            (
                limits.family_limit(size.family),
                family_use,
                f"{family_display_name(size.family)} Cluster Dedicated",
            ),
            (limits.total_dedicated, usage.dedicated, "Total Cluster Dedicated Regional"),
        ]
    for limit, in_use, label in checks:
        if in_use + additional > limit:
            return AzureError(
                400,
                "QuotaExceeded",
                "Operation results in exceeding quota limits of Core. Maximum allowed: "
                f"{limit}, Current in use: {in_use}, Additional requested: {additional}. "
                f"{QUOTA_HELP} (Quota: {label} vCPUs in {location}; request more quota or "
                "lower the cluster's maximum node count.)",
            )
    return None


# -- nodes ----------------------------------------------------------------------------------------


def active(ctx: Context, compute_id: str | None = None) -> list[dict[str, Any]]:
    return [
        node
        for node in ctx.store.values(NODE_KIND)
        if node["released_at"] is None
        and (compute_id is None or node["compute_id"].lower() == compute_id.lower())
    ]


def get(ctx: Context, node_id: str) -> dict[str, Any] | None:
    return ctx.store.get(NODE_KIND, node_id)


def save(ctx: Context, node: dict[str, Any]) -> None:
    ctx.store.put(NODE_KIND, node["id"], node)


def _provision(ctx: Context, cluster: PoolSpec, now: float, provision_s: float) -> dict:
    suffix = "p" if cluster.priority == "LowPriority" else "d"
    ordinal = len(ctx.store.values(NODE_KIND)) + 4
    node = {
        "id": f"tvmps_{secrets.token_hex(32)}_{suffix}",
        "compute_id": cluster.id,
        "compute": cluster.name,
        "location": cluster.location,
        "vm_size": cluster.size.name,
        "family": cluster.size.family,
        "vcpus": cluster.size.vcpus,
        "priority": cluster.priority,
        "price_hourly": cluster.size.price_for(cluster.priority),
        "private_ip": f"10.0.{ordinal // 250}.{ordinal % 250 + 4}",
        "state": "preparing",
        "acquired_at": now,
        "ready_at": now + provision_s,
        "released_at": None,
        "release_reason": None,
        "idle_since": None,
        "run_id": None,
        "jobs": [],
        "images": [],
    }
    save(ctx, node)
    return node


def provision(ctx: Context, spec: PoolSpec, now: float) -> dict[str, Any]:
    """A new node for a pool that keeps its own node count (a Batch pool's resize): its
    provisioning starts now and takes the simulated provisioning time."""
    return _provision(ctx, spec, now, timing(ctx).provision())


def _allocation_blocked(ctx: Context, cluster: PoolSpec) -> bool:
    """Record (or clear) the cluster's resize error; True when quota blocks one more node."""
    error = quota_error(ctx, cluster.location, cluster.size, cluster.priority, cluster.size.vcpus)
    if error is None:
        ctx.store.delete(ALLOCATION_ERROR_KIND, cluster.id.lower())
        return False
    ctx.store.put(
        ALLOCATION_ERROR_KIND, cluster.id.lower(), {"code": error.code, "message": error.message}
    )
    return True


def acquire(
    ctx: Context, cluster: PoolSpec, run_name: str, image_digest: str | None, now: float
) -> dict[str, Any] | None:
    """Give the job a node: a free one (preferring one that has the image), else a new one if
    the cluster is below its maximum and quota allows; None means the job waits in Queued.

    Azure checks core quota when the cluster scales up; so does the emulator (and also when the
    cluster is created, see ``computes``)."""
    nodes = active(ctx, cluster.id)
    free = [n for n in nodes if n["run_id"] is None]
    if free:
        free.sort(key=lambda n: (image_digest not in n["images"], n["ready_at"]))
        node = free[0]
    elif len(nodes) < cluster.max_nodes and not _allocation_blocked(ctx, cluster):
        node = _provision(ctx, cluster, now, timing(ctx).provision())
    else:
        return None
    node["run_id"] = run_name
    node["jobs"].append(run_name)
    node["idle_since"] = None
    node["state"] = "running" if now >= node["ready_at"] else "preparing"
    save(ctx, node)
    return node


def finish(ctx: Context, node_id: str, at: float) -> None:
    """The node's job is over: the node stays, idle, until scale-down or the next job."""
    node = get(ctx, node_id)
    if node is None or node["released_at"] is not None:
        return
    node.update(run_id=None, state="idle", idle_since=max(at, node["ready_at"]))
    save(ctx, node)


def cache_image(ctx: Context, node_id: str, digest: str) -> None:
    node = get(ctx, node_id)
    if node is not None and digest not in node["images"]:
        node["images"].append(digest)
        save(ctx, node)


def release(ctx: Context, node: dict[str, Any], at: float, reason: str) -> None:
    node.update(
        released_at=max(at, node["acquired_at"]),
        release_reason=reason,
        state="preempted" if reason == "preempted" else "released",
        run_id=None,
    )
    save(ctx, node)


def scale(ctx: Context, clusters: list[PoolSpec], now: float) -> None:
    """Finish provisioning, release nodes idle past the cluster's idle time (down to its
    minimum, or to its maximum if that was lowered), and keep the minimum allocated."""
    provision_s = timing(ctx).provision()
    known = {cluster.id.lower() for cluster in clusters}
    for node in active(ctx):
        # A cluster deleted (or reset away) while this tick ran leaves no node behind.
        if node["compute_id"].lower() not in known and not ctx.store.get_resource(
            node["compute_id"]
        ):
            release(ctx, node, now, "compute deleted")
    for cluster in clusters:
        nodes = active(ctx, cluster.id)
        for node in nodes:
            if node["state"] == "preparing" and now >= node["ready_at"]:
                if node["run_id"]:
                    node["state"] = "running"
                else:
                    node.update(state="idle", idle_since=node["ready_at"])
                save(ctx, node)
        count = len(nodes)
        idle = sorted((n for n in nodes if n["state"] == "idle"), key=lambda n: n["idle_since"])
        for node in idle:
            scale_down_at = node["idle_since"] + cluster.idle_s
            if count > cluster.max_nodes:
                release(ctx, node, now, "scaled down")
            elif count > cluster.min_nodes and now >= scale_down_at:
                # Exact even when the scheduler was not running at that moment.
                release(ctx, node, scale_down_at, "idle")
            else:
                continue
            count -= 1
        while count < min(cluster.min_nodes, cluster.max_nodes):
            if _allocation_blocked(ctx, cluster):
                break
            _provision(ctx, cluster, now, provision_s)
            count += 1


def release_under(ctx: Context, resource_id: str, now: float) -> None:
    """Delete hook: the nodes of deleted clusters (or workspaces, groups) are released."""
    for node in active(ctx):
        if covers(resource_id, node["compute_id"]):
            release(ctx, node, now, "compute deleted")
    for key, _ in ctx.store.items(ALLOCATION_ERROR_KIND):
        if covers(resource_id, key):
            ctx.store.delete(ALLOCATION_ERROR_KIND, key)


# -- accounting ---------------------------------------------------------------------------------


def node_seconds(node: dict[str, Any], now: float) -> float:
    end = node["released_at"] if node["released_at"] is not None else now
    return max(0.0, end - node["acquired_at"])


def report(ctx: Context, now: float, compute: str | None = None) -> dict[str, Any]:
    """Every node ever allocated, with node-seconds and cost, and the totals per cluster."""
    nodes = [
        {**node, "node_seconds": round(node_seconds(node, now), 3)}
        for node in ctx.store.values(NODE_KIND)
        if compute is None or node["compute"].lower() == compute.lower()
    ]
    for node in nodes:
        node["cost_usd"] = node["node_seconds"] / 3600 * node["price_hourly"]
    totals: dict[str, dict[str, Any]] = {}
    for node in sorted(nodes, key=lambda n: n["acquired_at"]):
        total = totals.setdefault(
            node["compute_id"].lower(),
            {
                "compute_id": node["compute_id"],
                "compute": node["compute"],
                "vm_size": node["vm_size"],
                "priority": node["priority"],
                "price_hourly": node["price_hourly"],
                "nodes": 0,
                "active_nodes": 0,
                "node_seconds": 0.0,
                "cost_usd": 0.0,
            },
        )
        total["nodes"] += 1
        total["active_nodes"] += node["released_at"] is None
        total["node_seconds"] = round(total["node_seconds"] + node["node_seconds"], 3)
        total["cost_usd"] += node["cost_usd"]
    return {"value": nodes, "computes": list(totals.values())}


def allocate(ctx: Context, spec: PoolSpec, now: float, provision_s: float) -> dict[str, Any]:
    """One node for a pool of its own (a virtual machine): counted in quota and node time like
    a cluster's nodes; the caller checks quota first (its service words the error)."""
    return _provision(ctx, spec, now, provision_s)
