"""AmlCompute's view of the shared node pool (``localazure.nodes.pool``): the live fields of a
compute GET and the answer of ``listNodes``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from localazure.core.context import Context
from localazure.nodes.pool import ACTIVE_STATES, ALLOCATION_ERROR_KIND, PoolSpec, active

NODE_PORT = 50000
ALLOCATION_STATE_KIND = "ml-allocation-state"


def _allocation_state(ctx: Context, compute_id: str, state: str, now: float) -> str:
    """When the cluster's allocation state last changed (``allocationStateTransitionTime``),
    noted when a read first sees the new state."""
    key = compute_id.lower()
    seen = ctx.store.get(ALLOCATION_STATE_KIND, key)
    if seen is None or seen["state"] != state:
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).isoformat().replace("+00:00", "Z")
        seen = {"state": state, "since": stamp}
        ctx.store.put(ALLOCATION_STATE_KIND, key, seen)
    return seen["since"]


def compute_status(ctx: Context, cluster: PoolSpec, now: float) -> dict[str, Any]:
    """The live fields of an AmlCompute GET (node counts, allocation state, resize errors)."""
    nodes = active(ctx, cluster.id)
    by_state = {state: sum(1 for n in nodes if n["state"] == state) for state in ACTIVE_STATES}
    error = ctx.store.get(ALLOCATION_ERROR_KIND, cluster.id.lower())
    target = max(len(nodes), min(cluster.min_nodes, cluster.max_nodes))
    state = "Resizing" if by_state["preparing"] or target > len(nodes) else "Steady"
    return {
        "currentNodeCount": len(nodes),
        "targetNodeCount": target,
        "nodeStateCounts": {
            "idleNodeCount": by_state["idle"],
            "runningNodeCount": by_state["running"],
            "preparingNodeCount": by_state["preparing"],
            "unusableNodeCount": 0,
            "leavingNodeCount": 0,
            "preemptedNodeCount": 0,
        },
        "allocationState": state,
        "allocationStateTransitionTime": _allocation_state(ctx, cluster.id, state, now),
        "errors": [{"error": error}] if error else None,
    }


def list_nodes_wire(ctx: Context, compute_id: str) -> list[dict[str, Any]]:
    """The ``nodes`` of ``POST .../computes/{name}/listNodes``."""
    return [
        {
            "nodeId": node["id"],
            "privateIpAddress": node["private_ip"],
            "publicIpAddress": None,
            "port": NODE_PORT,
            "nodeState": node["state"],
            "runId": node["run_id"],
        }
        for node in active(ctx, compute_id)
    ]
