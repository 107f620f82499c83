"""AmlCompute's view of the shared node pool (``localazure.nodes.pool``): the live fields of a
compute GET and the answer of ``listNodes``."""

from __future__ import annotations

from typing import Any

from localazure.core.context import Context
from localazure.nodes.pool import ACTIVE_STATES, ALLOCATION_ERROR_KIND, PoolSpec, active

NODE_PORT = 50000


def compute_status(ctx: Context, cluster: PoolSpec, now: float) -> dict[str, Any]:
    """The live fields of an AmlCompute GET (node counts, allocation state, resize errors)."""
    nodes = active(ctx, cluster.id)
    by_state = {state: sum(1 for n in nodes if n["state"] == state) for state in ACTIVE_STATES}
    error = ctx.store.get(ALLOCATION_ERROR_KIND, cluster.id.lower())
    target = max(len(nodes), min(cluster.min_nodes, cluster.max_nodes))
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
        "allocationState": "Resizing" if by_state["preparing"] or target > len(nodes) else "Steady",
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
