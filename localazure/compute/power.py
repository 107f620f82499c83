"""The life of a VM beyond its ARM body: its power state, the node it holds while allocated
(a ``nodes.pool`` node, so that VMs count in core quota and node time as AML nodes do), its SSH
host key, the secrets its processes use, and its custom data (run once, at first boot).

A power action sets a target state reached at ``until``; the state at any time is computed
from the record and the clock, so that reads need no background work. The compute service's
lifecycle (``vm_lifecycle``) brings the processes in line: SSH server up while running, custom
data at first boot, containers and sessions gone when the VM stops or goes away.
"""

from __future__ import annotations

import secrets
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.nodes import pool as node_pool
from localazure.nodes.pool import PoolSpec
from localazure.nodes.vm_catalog import VmSize, family_display_name

KIND = "compute-vm"
# target -> the transitional state shown until it is reached
TRANSITIONS = {
    "running": "starting",
    "stopped": "stopping",
    "deallocated": "deallocating",
}
STOP_S = 0.2


def key(vm_id: str) -> str:
    return vm_id.lower()


def get(ctx: Context, vm_id: str) -> dict[str, Any] | None:
    return ctx.store.get(KIND, key(vm_id))


def save(ctx: Context, record: dict[str, Any]) -> None:
    ctx.store.put(KIND, key(record["id"]), record)


def all_records(ctx: Context) -> list[dict[str, Any]]:
    return ctx.store.values(KIND)


def new_host_key() -> str:
    private = ed25519.Ed25519PrivateKey.generate()
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def create(
    ctx: Context,
    vm: dict[str, Any],
    *,
    disk_id: str,
    admin_user: str,
    public_keys: list[str],
    custom_data: str | None,
) -> dict[str, Any]:
    record = {
        "id": vm["id"],
        "name": vm["name"],
        "target": "running",
        "until": ctx.clock(),
        "boot": 0,
        "node_id": None,
        "host_key": new_host_key(),
        "agent_secret": secrets.token_urlsafe(32),
        "disk_id": disk_id,
        "admin_user": admin_user,
        "public_keys": public_keys,
        "custom_data": custom_data,
        "custom_data_done": False,
        "generalized": False,
    }
    save(ctx, record)
    return record


def state(record: dict[str, Any], now: float) -> str:
    """The power state now: the target once reached, else its transitional state."""
    if now >= record["until"]:
        return record["target"]
    return TRANSITIONS.get(record["target"], record["target"])


# -- allocation -----------------------------------------------------------------------------------


def spec_of(vm: dict[str, Any], size: VmSize) -> PoolSpec:
    priority = "LowPriority" if vm["properties"].get("priority") in ("Spot", "Low") else "Dedicated"
    return PoolSpec(
        id=vm["id"],
        name=vm["name"],
        location=vm["location"],
        size=size,
        priority=priority,
        min_nodes=1,
        max_nodes=1,
        idle_s=0.0,
        security_type=security_type(vm),
    )


def security_type(vm: dict[str, Any]) -> str:
    return ((vm["properties"].get("securityProfile") or {}).get("securityType")) or "Standard"


def quota_error(ctx: Context, vm: dict[str, Any], size: VmSize) -> AzureError | None:
    """Azure's answer when the VM's cores do not fit the regional family or total quota."""
    location = vm["location"]
    limits = node_pool.quota(ctx)
    usage = node_pool.cores_in_use(ctx, location, exclude_compute=vm["id"])
    checks = (
        (
            family_display_name(size.family),
            size.family,
            limits.family_limit(size.family),
            usage.families.get(size.family, 0),
        ),
        ("Total Regional", "cores", limits.total_dedicated, usage.dedicated),
    )
    for label, family, limit, in_use in checks:
        if in_use + size.vcpus > limit:
            return AzureError(
                409,
                "OperationNotAllowed",
                f"Operation could not be completed as it results in exceeding approved {family} "
                f"Cores quota. Additional details - Deployment Model: Resource Manager, Location: "
                f"{location}, Current Limit: {limit}, Current Usage: {in_use}, Additional "
                f"Required: {size.vcpus}, (Minimum) New Limit Required: {in_use + size.vcpus}. "
                "Submit a request for Quota increase at https://aka.ms/ProdportalCRP/#blade/"
                "Microsoft_Azure_Capacity/UsageAndQuota.ReactView/Parameters/%7B%22subscriptionId"
                f"%22:%22{ctx.subscription_id}%22,%22command%22:%22openQuotaApprovalBlade%22%7D "
                f"by specifying parameters listed in the 'Details' section for deployment to "
                f"succeed ({label} vCPUs). Please read more about quota limits at "
                "https://docs.microsoft.com/en-us/azure/azure-supportability/"
                "per-vm-quota-requests",
            )
    return None


def allocate(ctx: Context, record: dict[str, Any], vm: dict[str, Any], size: VmSize) -> None:
    """Hold a node for the VM (from now: node time counts), after the quota check."""
    if record["node_id"] and _active(ctx, record["node_id"]):
        return
    error = quota_error(ctx, vm, size)
    if error is not None:
        raise error
    now = ctx.clock()
    node = node_pool.allocate(ctx, spec_of(vm, size), now, node_pool.timing(ctx).provision())
    record["node_id"] = node["id"]


def _active(ctx: Context, node_id: str) -> bool:
    node = node_pool.get(ctx, node_id)
    return node is not None and node["released_at"] is None


def deallocate(ctx: Context, record: dict[str, Any], reason: str) -> None:
    """Give the node back (node time stops)."""
    node = node_pool.get(ctx, record["node_id"]) if record["node_id"] else None
    if node is not None and node["released_at"] is None:
        node_pool.release(ctx, node, ctx.clock(), reason)
    record["node_id"] = None


def set_target(ctx: Context, record: dict[str, Any], target: str, seconds: float) -> None:
    record.update(target=target, until=ctx.clock() + seconds)
    if target == "running":
        # When the start (or create) completes: the time of the instance view's
        # ProvisioningState status, as on Azure.
        record["provisioned_at"] = record["until"]
