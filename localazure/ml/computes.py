"""AmlCompute clusters (``.../workspaces/{ws}/computes/{name}``), the regional VM size list and
core usages.

A PUT is validated before anything is created: the VM size against ``nodes.vm_catalog`` (Azure's
``VMSizeNotSupported``), the priority, the scale settings, and the cluster's maximum cores against
the family quota (Azure's ``QuotaExceeded``). Azure checks quota when a cluster scales up; the
emulator checks both at creation (max nodes x vCPUs must fit) and at every scale-up.

Deviation: AmlCompute has no security type in Azure's API (it is a property of the VMs behind
it). The emulator reads it from ``properties.properties.propertyBag.securityType``: ``Standard``
(default) or ``TrustedLaunch``. TrustedLaunch nodes cannot run nested virtualization, so the WAA
container fails at start on them (see ``containers``).

The GET shows the live node counts (``currentNodeCount``, ``targetNodeCount``,
``nodeStateCounts``, ``allocationState``) and resize errors (``errors``) from ``nodes``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import check_location
from localazure.arm.resources import (
    delete_tree,
    in_subscription,
    now_iso,
    resource_or_404,
    system_data,
)
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request
from localazure.core.http import json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.ml import (
    COMPUTE_TYPE,
    NAMESPACE,
    WORKSPACE_PATH,
    parse_duration,
    workspaces,
)
from localazure.ml.compute_nodes import compute_status, list_nodes_wire
from localazure.nodes import pool as node_pool
from localazure.nodes import vm_catalog
from localazure.nodes.pool import PoolSpec
from localazure.nodes.vm_catalog import VmSize

READ = f"{COMPUTE_TYPE}/read"
WRITE = f"{COMPUTE_TYPE}/write"
DELETE = f"{COMPUTE_TYPE}/delete"
LIST_NODES = f"{COMPUTE_TYPE}/listNodes/action"
SIZES_READ = f"{NAMESPACE}/locations/vmsizes/read"
USAGES_READ = f"{NAMESPACE}/locations/usages/read"
DEFAULT_VM_SIZE = "STANDARD_DS3_V2"
DEFAULT_IDLE = "PT120S"
PRIORITIES = ("Dedicated", "LowPriority")
SECURITY_TYPES = ("Standard", "TrustedLaunch")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,31}$")


def cluster_spec(resource: dict[str, Any]) -> PoolSpec:
    aml = resource["properties"]["properties"]
    scale = aml["scaleSettings"]
    size = vm_catalog.find(aml["vmSize"])
    if size is None:
        raise ValueError(f"stored cluster {resource['id']} has unknown size {aml['vmSize']}")
    return PoolSpec(
        id=resource["id"],
        name=resource["name"],
        location=resource["location"],
        size=size,
        priority=aml["vmPriority"],
        min_nodes=scale["minNodeCount"],
        max_nodes=scale["maxNodeCount"],
        idle_s=parse_duration(scale["nodeIdleTimeBeforeScaleDown"]),
        security_type=aml["propertyBag"]["securityType"],
    )


def all_clusters(ctx: Context) -> list[PoolSpec]:
    return [cluster_spec(r) for r in ctx.store.list_resources(type=COMPUTE_TYPE)]


def compute_id(workspace: dict[str, Any], name: str) -> str:
    return f"{workspace['id']}/computes/{name}"


def load(ctx: Context, workspace: dict[str, Any], name: str) -> dict[str, Any]:
    rg = workspace["id"].split("/")[4]
    return resource_or_404(
        ctx, compute_id(workspace, name), f"{COMPUTE_TYPE}", f"{workspace['name']}/{name}", rg
    )


def view(ctx: Context, resource: dict[str, Any]) -> dict[str, Any]:
    """The compute as GET returns it, with its live node counts."""
    status = compute_status(ctx, cluster_spec(resource), ctx.clock())
    resource["properties"]["properties"].update(status)
    return resource


# -- validation -----------------------------------------------------------------------------------


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    for option in allowed:
        if str(value).lower() == option.lower():
            return option
    raise bad_request(
        "BadArgument", f"Invalid {what} '{value}'. Allowed values are: {', '.join(allowed)}."
    )


def _node_count(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise bad_request("BadArgument", f"{what} must be a whole number >= 0, not {value!r}.")
    return value


def _size(ctx: Context, name: str, location: str) -> VmSize:
    size = vm_catalog.find(name)
    if size is None:
        available = ",".join(s.name for s in vm_catalog.CATALOG)
        raise bad_request(
            "VMSizeNotSupported",
            f"Virtual Machine size: '{name}' is not supported for subscription "
            f"{ctx.subscription_id} in location '{location}'. The available VM sizes are: "
            f"{available}.",
        )
    return size


def _aml_properties(
    ctx: Context, given: dict[str, Any], location: str, existing: dict[str, Any] | None
) -> dict[str, Any]:
    size = _size(ctx, given.get("vmSize") or DEFAULT_VM_SIZE, location)
    priority = _choice(given.get("vmPriority") or "Dedicated", PRIORITIES, "vmPriority")
    if priority == "LowPriority" and not size.low_priority_capable:
        raise bad_request(
            "BadArgument", f"VM size '{size.name}' is not available with LowPriority priority."
        )
    scale = given.get("scaleSettings")
    if not isinstance(scale, dict) or "maxNodeCount" not in scale:
        raise bad_request(
            "BadArgument",
            "scaleSettings with maxNodeCount is required for an AmlCompute cluster.",
        )
    max_nodes = _node_count(scale["maxNodeCount"], "scaleSettings.maxNodeCount")
    min_nodes = _node_count(scale.get("minNodeCount") or 0, "scaleSettings.minNodeCount")
    if min_nodes > max_nodes:
        raise bad_request(
            "BadArgument",
            f"scaleSettings.minNodeCount ({min_nodes}) cannot exceed maxNodeCount ({max_nodes}).",
        )
    idle = scale.get("nodeIdleTimeBeforeScaleDown") or DEFAULT_IDLE
    try:
        parse_duration(idle)
    except ValueError as err:
        raise bad_request(
            "BadArgument", f"scaleSettings.nodeIdleTimeBeforeScaleDown: {err}."
        ) from None
    bag = given.get("propertyBag") or {}
    security = _choice(bag.get("securityType") or "Standard", SECURITY_TYPES, "securityType")
    if existing is not None:
        old = existing["properties"]["properties"]
        for name, new in (("vmSize", size.name.upper()), ("vmPriority", priority)):
            if str(old[name]).lower() != new.lower():
                raise bad_request(
                    "PropertyChangeNotAllowed",
                    f"Changing property '{name}' of an existing AmlCompute cluster is not "
                    f"allowed (it is '{old[name]}'); delete the cluster and create it again.",
                )
    credentials = given.get("userAccountCredentials")
    return {
        "osType": "Linux",
        "vmSize": size.name.upper(),
        "vmPriority": priority,
        "scaleSettings": {
            "maxNodeCount": max_nodes,
            "minNodeCount": min_nodes,
            "nodeIdleTimeBeforeScaleDown": idle,
        },
        "virtualMachineImage": None,
        "isolatedNetwork": False,
        "subnet": given.get("subnet"),
        "remoteLoginPortPublicAccess": given.get("remoteLoginPortPublicAccess") or "NotSpecified",
        "enableNodePublicIp": given.get("enableNodePublicIp", True),
        # Azure never returns the password or key of the node admin account.
        "userAccountCredentials": (
            {"adminUserName": credentials.get("adminUserName")} if credentials else None
        ),
        "propertyBag": {**bag, "securityType": security},
    }


def _check_quota(ctx: Context, rid: str, location: str, aml: dict[str, Any]) -> None:
    size = vm_catalog.find(aml["vmSize"])
    assert size is not None
    cores = aml["scaleSettings"]["maxNodeCount"] * size.vcpus
    error = node_pool.quota_error(ctx, location, size, aml["vmPriority"], cores, rid)
    if error is not None:
        raise error


# -- routes ---------------------------------------------------------------------------------------


@operations.on_complete("ml.compute.put")
def _compute_put_done(ctx: Context, params: dict[str, Any]) -> None:
    return None


@operations.on_complete("ml.compute.delete")
def _delete_compute(ctx: Context, params: dict[str, Any]) -> None:
    delete_tree(ctx, params["id"])


def register(router: Router, ctx: Context) -> None:
    async def put_compute(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        api_version = require_api_version(request)
        caller = request.state.caller
        ws = request.state.parent
        rid = compute_id(ws, name)
        if not _NAME.match(name):
            raise bad_request(
                "BadArgument",
                f"Compute name '{name}' is invalid: it must be 2 to 32 characters, start with "
                "a letter, and contain only letters, digits and hyphens.",
            )
        body = await json_body(request)
        props = body.get("properties") or {}
        compute_type = props.get("computeType") or ""
        if compute_type.lower() != "amlcompute":
            raise bad_request(
                "BadArgument",
                f"Compute type '{compute_type}' is not supported by localazure; it emulates "
                "AmlCompute clusters only.",
            )
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            location = check_location(
                body.get("location") or (existing or ws)["location"], COMPUTE_TYPE
            )
            aml = _aml_properties(ctx, props.get("properties") or {}, location, existing)
            _check_quota(ctx, rid, location, aml)
            stamp = now_iso()
            resource = {
                "id": existing["id"] if existing else rid,
                "name": existing["name"] if existing else name,
                "type": COMPUTE_TYPE,
                "location": location,
                "tags": body.get("tags") or {},
                "identity": body.get("identity"),
                "sku": None,
                "systemData": system_data(existing, caller),
                "properties": {
                    "computeType": "AmlCompute",
                    "computeLocation": location,
                    "description": props.get("description"),
                    "createdOn": existing["properties"]["createdOn"] if existing else stamp,
                    "modifiedOn": stamp,
                    "resourceId": None,
                    "provisioningState": "Succeeded",
                    "provisioningErrors": None,
                    "isAttachedCompute": False,
                    "disableLocalAuth": props.get("disableLocalAuth", True),
                    "properties": aml,
                },
            }
            ctx.store.put_resource(resource)
        op = operations.start(
            ctx, namespace=NAMESPACE, location=location, kind="ml.compute.put", params={"id": rid}
        )
        return json_response(
            view(ctx, resource),
            200 if existing else 201,
            headers=operations.headers(ctx, op, api_version),
        )

    async def get_compute(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        ws = request.state.parent
        return json_response(view(ctx, load(ctx, ws, name)))

    async def list_computes(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        ws = request.state.parent
        items = ctx.store.list_resources(type=COMPUTE_TYPE, parent=ws["id"])
        return json_response(list_page([view(ctx, item) for item in items]))

    async def delete_compute(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        api_version = require_api_version(request)
        ws = request.state.parent
        action = request.query_params.get("underlyingResourceAction", "Delete")
        _choice(action, ("Delete", "Detach"), "underlyingResourceAction")
        resource = load(ctx, ws, name)
        return operations.accepted(
            ctx,
            api_version,
            namespace=NAMESPACE,
            location=resource["location"],
            kind="ml.compute.delete",
            params={"id": resource["id"]},
        )

    async def list_nodes(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        require_api_version(request)
        ws = request.state.parent
        resource = load(ctx, ws, name)
        return json_response({"nodes": list_nodes_wire(ctx, resource["id"]), "nextLink": None})

    async def list_sizes(request: Request, sub: str, location: str) -> Response:
        require_api_version(request)
        check_location(location, f"{NAMESPACE}/locations/vmSizes")
        return json_response(list_page([vm_size_entry(size) for size in vm_catalog.CATALOG]))

    async def list_usages(request: Request, sub: str, location: str) -> Response:
        require_api_version(request)
        location = check_location(location, f"{NAMESPACE}/locations/usages")
        return json_response({"value": usages(ctx, location), "nextLink": None})

    computes = WORKSPACE_PATH + "/computes"
    in_ws, in_sub = workspaces.in_workspace(ctx), in_subscription(ctx)
    one = computes + "/{name}"
    compute = "{parent}/computes/{name}"
    router.add("PUT", one, put_compute, parent=in_ws, action=WRITE, scope=compute)
    router.add("GET", one, get_compute, parent=in_ws, action=READ, scope=compute)
    router.add("DELETE", one, delete_compute, parent=in_ws, action=DELETE, scope=compute)
    router.add("GET", computes, list_computes, parent=in_ws, action=READ)
    router.add(
        "POST", one + "/listNodes", list_nodes, parent=in_ws, action=LIST_NODES, scope=compute
    )
    regional = f"/subscriptions/{{sub}}/providers/{NAMESPACE}/locations/{{location}}"
    router.add("GET", regional + "/vmSizes", list_sizes, parent=in_sub, action=SIZES_READ)
    router.add("GET", regional + "/usages", list_usages, parent=in_sub, action=USAGES_READ)


def usages(ctx: Context, location: str) -> list[dict[str, Any]]:
    """Regional core usages and limits, in the order and shape AML lists them."""
    limits = node_pool.quota(ctx)
    in_use = node_pool.cores_in_use(ctx, location)
    base = f"/subscriptions/{ctx.subscription_id}/providers/{NAMESPACE}/locations/{location}"

    def usage(kind: str, name: str, label: str, current: int, limit: int) -> dict[str, Any]:
        return {
            "id": f"{base}/usages/{name}",
            "amlWorkspaceLocation": location,
            "type": f"{NAMESPACE}/{kind}/usages",
            "unit": "Count",
            "currentValue": current,
            "limit": limit,
            "name": {"value": name, "localizedValue": label},
        }

    items = [
        usage(
            "totalCores",
            "Total Cluster Dedicated Regional vCPUs",
            "Total Cluster Dedicated Regional vCPUs",
            in_use.dedicated,
            limits.total_dedicated,
        ),
        usage(
            "totalLowPriorityCores",
            "Total Cluster LowPriority Regional vCPUs",
            "Total Cluster LowPriority Regional vCPUs",
            in_use.low_priority,
            limits.low_priority,
        ),
    ]
    items += [
        usage(
            "vmFamily",
            family,
            f"{vm_catalog.family_display_name(family)} Cluster Dedicated vCPUs",
            in_use.families.get(family, 0),
            limits.family_limit(family),
        )
        for family in vm_catalog.families()
    ]
    return items


def compute_not_found(workspace: str, name: str) -> AzureError:
    return bad_request(
        "UserError",
        f"Compute '{name}' was not found in workspace '{workspace}'; create the AmlCompute "
        "cluster first or name an existing one.",
    )


def vm_size_entry(size: VmSize) -> dict[str, Any]:
    """The entry of ``GET .../locations/{location}/vmSizes`` (api-version 2023-08-01-preview)."""
    prices = [
        {"retailPrice": size.price_hourly, "osType": "Linux", "vmTier": "Standard"},
    ]
    if size.low_priority_capable:
        prices += [
            {"retailPrice": size.low_priority_price_hourly, "osType": "Linux", "vmTier": tier}
            for tier in ("LowPriority", "Spot")
        ]
    return {
        "name": size.name,
        "family": size.family,
        "vCPUs": size.vcpus,
        "gpus": 0,
        "osVhdSizeMB": 1047552,
        "maxResourceVolumeMB": size.max_resource_volume_mb,
        "memoryGB": size.memory_gb,
        "lowPriorityCapable": size.low_priority_capable,
        "premiumIO": size.premium_io,
        "estimatedVMPrices": {
            "billingCurrency": vm_catalog.BILLING_CURRENCY,
            "unitOfMeasure": "OneHour",
            "values": prices,
        },
        "supportedComputeTypes": ["AmlCompute", "ComputeInstance"],
    }
