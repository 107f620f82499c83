"""How a pool looks with its live state: the management API's ``Pool`` and the data plane's
``CloudPool`` (node counts, ``allocationState``, the resize operation and its errors)."""

from __future__ import annotations

from typing import Any

from localazure.batch import nodes, pool_model
from localazure.batch.jobs import etag, iso
from localazure.core.context import Context


def _live(ctx: Context, pool: dict[str, Any]) -> dict[str, Any]:
    operation = pool_model.resize(ctx, pool["id"]) or {}
    dedicated, low = nodes.counts(ctx, pool["id"])
    return {
        "operation": operation,
        "dedicated": dedicated,
        "low": low,
        "allocation": operation.get("state", "steady"),
        "transition": operation.get("transitionTime", pool["creation_ts"]),
    }


def mgmt_view(ctx: Context, pool: dict[str, Any]) -> dict[str, Any]:
    live = _live(ctx, pool)
    operation = live["operation"]
    props = {k: v for k, v in pool["properties"].items()}
    props.update(
        provisioningState="Succeeded",
        provisioningStateTransitionTime=iso(pool["creation_ts"]),
        creationTime=iso(pool["creation_ts"]),
        lastModified=iso(pool["modified_ts"]),
        allocationState="Resizing" if live["allocation"] == "resizing" else "Steady",
        allocationStateTransitionTime=iso(live["transition"]),
        currentDedicatedNodes=live["dedicated"],
        currentLowPriorityNodes=live["low"],
    )
    if operation:
        props["resizeOperationStatus"] = {
            "targetDedicatedNodes": operation["targetDedicatedNodes"],
            "targetLowPriorityNodes": operation["targetLowPriorityNodes"],
            "resizeTimeout": operation["resizeTimeout"],
            "nodeDeallocationOption": operation["nodeDeallocationOption"].capitalize()
            if operation["nodeDeallocationOption"] != "taskCompletion"
            else "TaskCompletion",
            "startTime": iso(operation["startTime"]),
            "errors": [
                {"code": e["code"], "message": e["message"], "details": []}
                for e in operation["errors"]
            ]
            or None,
        }
    autoscale_run = ctx.store.get("batch-autoscale-run", pool["id"].lower())
    if autoscale_run:
        props["autoScaleRun"] = {
            "evaluationTime": iso(autoscale_run["evaluationTime"]),
            "results": autoscale_run["results"],
        }
    body = {k: v for k, v in pool.items() if k not in ("creation_ts", "modified_ts")}
    body["properties"] = props
    body["etag"] = pool_etag(pool)
    return body


def pool_etag(pool: dict[str, Any]) -> str:
    return etag({"id": pool["id"], "modified": pool["modified_ts"]})


def data_view(ctx: Context, base_url: str, pool: dict[str, Any]) -> dict[str, Any]:
    live = _live(ctx, pool)
    operation = live["operation"]
    props = pool["properties"]
    vm = pool_model.vm_configuration(pool)
    scale = props.get("scaleSettings") or {}
    auto = scale.get("autoScale")
    vm_wire: dict[str, Any] = {
        "imageReference": vm.get("imageReference"),
        "nodeAgentSKUId": vm.get("nodeAgentSkuId"),
    }
    for name in ("containerConfiguration", "securityProfile", "dataDisks", "licenseType", "osDisk"):
        if vm.get(name) is not None:
            vm_wire[name] = vm[name]
    body = {
        "id": pool["name"],
        "url": f"{base_url}/pools/{pool['name']}",
        "eTag": pool_etag(pool),
        "lastModified": iso(pool["modified_ts"]),
        "creationTime": iso(pool["creation_ts"]),
        "state": "active",
        "stateTransitionTime": iso(pool["creation_ts"]),
        "allocationState": live["allocation"],
        "allocationStateTransitionTime": iso(live["transition"]),
        "vmSize": props["vmSize"].lower(),
        "virtualMachineConfiguration": vm_wire,
        "resizeTimeout": operation.get("resizeTimeout", pool_model.DEFAULT_RESIZE_TIMEOUT),
        "currentDedicatedNodes": live["dedicated"],
        "currentLowPriorityNodes": live["low"],
        "targetDedicatedNodes": operation.get("targetDedicatedNodes", 0),
        "targetLowPriorityNodes": operation.get("targetLowPriorityNodes", 0),
        "enableAutoScale": bool(auto),
        "enableInterNodeCommunication": props.get("interNodeCommunication") == "Enabled",
        "taskSlotsPerNode": props.get("taskSlotsPerNode", 1),
        "taskSchedulingPolicy": props.get("taskSchedulingPolicy") or {"nodeFillType": "Spread"},
    }
    if auto:
        body["autoScaleFormula"] = auto["formula"]
        body["autoScaleEvaluationInterval"] = auto.get("evaluationInterval") or "PT15M"
    if operation.get("errors") and live["allocation"] == "steady":
        body["resizeErrors"] = [
            {"code": e["code"], "message": e["message"], "values": e.get("values") or []}
            for e in operation["errors"]
        ]
    if props.get("startTask"):
        body["startTask"] = props["startTask"]
    identities = (pool.get("identity") or {}).get("userAssignedIdentities") or {}
    if identities:
        body["identity"] = {
            "type": "UserAssigned",
            "userAssignedIdentities": [
                {"resourceId": rid, "clientId": v["clientId"], "principalId": v["principalId"]}
                for rid, v in identities.items()
            ],
        }
    return body
