"""Admin routes of the ML service, outside Azure's namespace (no token needed):

GET    /_localazure/ml/nodes[?compute=NAME]  every node ever allocated, with node-seconds and
                                              cost, and the totals per cluster
GET    /_localazure/ml/settings               simulated delays (see ``nodes.pool.Timing``)
PUT    /_localazure/ml/settings               change some of them: {"time_scale": 0.1, ...}
GET    /_localazure/ml/quota                  regional vCPU quotas
PUT    /_localazure/ml/quota                  {"family_default": 100, "families":
                                              {"standardDv3Family": 8}, "low_priority": 100,
                                              "total_dedicated": 500}
POST   /_localazure/ml/faults                 add a workload fault (see ``nodes.workload_faults``)
GET    /_localazure/ml/faults                 list them (with hits and uses left)
DELETE /_localazure/ml/faults                 clear them
"""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response

from localazure.admin.routes import PREFIX
from localazure.core.context import Context
from localazure.core.errors import bad_request
from localazure.core.http import empty, json_body, json_response
from localazure.core.router import Router
from localazure.nodes import pool as node_pool
from localazure.nodes import workload_faults

ML_PREFIX = PREFIX + "/ml"


def register(router: Router, ctx: Context) -> None:
    async def get_nodes(request: Request) -> Response:
        compute = request.query_params.get("compute")
        return json_response(node_pool.report(ctx, ctx.clock(), compute))

    async def get_settings(request: Request) -> Response:
        return json_response(asdict(node_pool.timing(ctx)))

    async def put_settings(request: Request) -> Response:
        try:
            timing = node_pool.update_timing(ctx, await json_body(request))
        except ValueError as err:
            raise bad_request("InvalidSetting", str(err)) from None
        return json_response(asdict(timing))

    async def get_quota(request: Request) -> Response:
        return json_response(asdict(node_pool.quota(ctx)))

    async def put_quota(request: Request) -> Response:
        try:
            quota = node_pool.update_quota(ctx, await json_body(request))
        except ValueError as err:
            raise bad_request("InvalidQuota", str(err)) from None
        return json_response(asdict(quota))

    async def add_fault(request: Request) -> Response:
        try:
            fault = workload_faults.add_fault(ctx, await json_body(request))
        except (ValueError, TypeError) as err:
            raise bad_request("InvalidFault", str(err)) from None
        return json_response(fault, 201)

    async def list_faults(request: Request) -> Response:
        return json_response({"value": workload_faults.list_faults(ctx)})

    async def clear_faults(request: Request) -> Response:
        workload_faults.clear_faults(ctx)
        return empty(204)

    router.add("GET", ML_PREFIX + "/nodes", get_nodes, auth="none")
    router.add("GET", ML_PREFIX + "/settings", get_settings, auth="none")
    router.add("PUT", ML_PREFIX + "/settings", put_settings, auth="none")
    router.add("GET", ML_PREFIX + "/quota", get_quota, auth="none")
    router.add("PUT", ML_PREFIX + "/quota", put_quota, auth="none")
    router.add("POST", ML_PREFIX + "/faults", add_fault, auth="none")
    router.add("GET", ML_PREFIX + "/faults", list_faults, auth="none")
    router.add("DELETE", ML_PREFIX + "/faults", clear_faults, auth="none")
