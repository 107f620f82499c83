"""Admin routes of the Compute service, outside Azure's namespace (no token needed):

GET    /_localazure/compute/vms              every VM: power state, public IP, SSH address and
                                              port, node time (running, not deallocated) and cost
GET    /_localazure/compute/nodes[?vm=NAME]   the VMs' node allocations, as ``/ml/nodes`` reports
                                              AML nodes (node-seconds, cost, totals per VM)
GET    /_localazure/compute/vms/{name}/containers  the containers of a VM
POST   /_localazure/compute/faults            add a VM fault (see ``compute.vm_faults``)
GET    /_localazure/compute/faults            list them
DELETE /_localazure/compute/faults            clear them

Container faults (never_starts, stuck, crash, slow_start) go through ``/_localazure/ml/faults``
(``nodes.workload_faults``) and match the container's name.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.admin.routes import PREFIX
from localazure.compute import VM_TYPE, docker_engine, power, vm_faults
from localazure.compute.virtual_machines import public_ip_of
from localazure.core.context import Context
from localazure.core.errors import bad_request, not_found
from localazure.core.http import empty, json_body, json_response
from localazure.core.router import Router
from localazure.network.addresses import ssh_port
from localazure.nodes import pool as node_pool

COMPUTE_PREFIX = PREFIX + "/compute"


def _vm_nodes(ctx: Context, vm_name: str | None = None) -> dict[str, Any]:
    vm_ids = {vm["id"].lower() for vm in ctx.store.list_resources(type=VM_TYPE)}
    vm_ids |= {r["id"].lower() for r in power.all_records(ctx)}
    report = node_pool.report(ctx, ctx.clock())
    nodes = [
        n
        for n in report["value"]
        if n["compute_id"].lower() in vm_ids or n.get("release_reason") in ("vm deleted",)
    ]
    if vm_name:
        nodes = [n for n in nodes if n["compute"].lower() == vm_name.lower()]
    wanted = {n["compute_id"].lower() for n in nodes}
    return {
        "value": nodes,
        "vms": [t for t in report["computes"] if t["compute_id"].lower() in wanted],
    }


def register(router: Router, ctx: Context) -> None:
    async def list_vms(request: Request) -> Response:
        now = ctx.clock()
        nodes = _vm_nodes(ctx)
        totals = {t["compute_id"].lower(): t for t in nodes["vms"]}
        out = []
        for vm in ctx.store.list_resources(type=VM_TYPE):
            record = power.get(ctx, vm["id"]) or {}
            address, _ = public_ip_of(ctx, vm)
            total = totals.get(vm["id"].lower(), {})
            out.append(
                {
                    "id": vm["id"],
                    "name": vm["name"],
                    "power_state": power.state(record, now) if record else None,
                    "vm_size": vm["properties"]["hardwareProfile"]["vmSize"],
                    "public_ip": address,
                    "ssh": {
                        "host": address,
                        "port": ssh_port(),
                        "user": record.get("admin_user"),
                    },
                    "node_seconds": total.get("node_seconds", 0.0),
                    "cost_usd": total.get("cost_usd", 0.0),
                }
            )
        return json_response({"value": out})

    async def get_nodes(request: Request) -> Response:
        return json_response(_vm_nodes(ctx, request.query_params.get("vm")))

    async def list_containers(request: Request, name: str) -> Response:
        for vm in ctx.store.list_resources(type=VM_TYPE):
            if vm["name"].lower() == name.lower():
                return json_response(
                    {
                        "value": [
                            docker_engine.public_view(c)
                            for c in docker_engine.vm_containers(ctx, vm["id"])
                        ]
                    }
                )
        raise not_found("NotFound", f"No VM named {name}.")

    async def add_fault(request: Request) -> Response:
        try:
            return json_response(vm_faults.add(ctx, await json_body(request)), 201)
        except (ValueError, TypeError) as err:
            raise bad_request("InvalidFault", str(err)) from None

    async def list_faults(request: Request) -> Response:
        return json_response({"value": vm_faults.list_all(ctx)})

    async def clear_faults(request: Request) -> Response:
        vm_faults.clear(ctx)
        return empty(204)

    router.add("GET", COMPUTE_PREFIX + "/vms", list_vms, auth="none")
    router.add("GET", COMPUTE_PREFIX + "/nodes", get_nodes, auth="none")
    router.add("GET", COMPUTE_PREFIX + "/vms/{name}/containers", list_containers, auth="none")
    router.add("POST", COMPUTE_PREFIX + "/faults", add_fault, auth="none")
    router.add("GET", COMPUTE_PREFIX + "/faults", list_faults, auth="none")
    router.add("DELETE", COMPUTE_PREFIX + "/faults", clear_faults, auth="none")
