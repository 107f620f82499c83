"""Admin routes of the Batch service, outside Azure's namespace (no token needed):

GET    /_localazure/batch/nodes[?pool=NAME]          every Batch node ever allocated, with
                                                      node-seconds and cost, and totals per pool
PUT    /_localazure/batch/accounts/{name}/quota       the account's core quotas: {"dedicated":
                                                      100, "low_priority": 100, "family_default":
                                                      100, "families": {...}, "pools": 100}
GET    /_localazure/batch/accounts/{name}/quota
POST   /_localazure/batch/faults                      a node fault (see ``nodes``): {"fault":
                                                      "unusable"|"start_task_fails"|"preempt",
                                                      "pool": <regex>, "times": 1, "after_s": 0.5}
GET    /_localazure/batch/faults, DELETE /_localazure/batch/faults
PUT    /_localazure/batch/preloaded-images            a custom VM image holds container images:
                                                      {"image_id": <Compute image id>,
                                                      "images": [<registry image refs>]} (until
                                                      the Compute service captures images from
                                                      VMs that pulled them)

Workload faults of tasks are the shared ones (``/_localazure/ml/faults``, ``job`` matching
``<job id>/<task id>``).
"""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response

from localazure.acr.images import ImagePullError, resolve_image
from localazure.admin.routes import PREFIX
from localazure.batch import ACCOUNT_TYPE, accounts, nodes, pool_model
from localazure.core.context import Context
from localazure.core.errors import bad_request, not_found
from localazure.core.http import empty, json_body, json_response
from localazure.core.router import Router
from localazure.identity import principals
from localazure.nodes import pool as node_pool

BATCH_PREFIX = PREFIX + "/batch"


def register(router: Router, ctx: Context) -> None:
    def account_named(name: str) -> dict:
        for account in ctx.store.list_resources(type=ACCOUNT_TYPE):
            if account["name"].lower() == name.lower():
                return account
        raise not_found("ResourceNotFound", f"No Batch account is called '{name}'.")

    async def get_nodes(request: Request) -> Response:
        wanted = request.query_params.get("pool")
        report = node_pool.report(ctx, ctx.clock())
        value = [
            n
            for n in report["value"]
            if "batch" in n
            and "/batchaccounts/" in n["compute_id"].lower()
            and (wanted is None or n["compute"].lower() == wanted.lower())
        ]
        for node in value:
            node["batch_state"] = nodes.state(node)
        ids = {n["compute_id"].lower() for n in value}
        pools = [p for p in report["computes"] if p["compute_id"].lower() in ids]
        return json_response({"value": value, "pools": pools})

    async def get_quota(request: Request, name: str) -> Response:
        return json_response(asdict(accounts.quota(ctx, account_named(name))))

    async def put_quota(request: Request, name: str) -> Response:
        try:
            limits = accounts.update_quota(ctx, account_named(name), await json_body(request))
        except ValueError as err:
            raise bad_request("InvalidQuota", str(err)) from None
        return json_response(asdict(limits))

    async def add_fault(request: Request) -> Response:
        try:
            fault = nodes.add_fault(ctx, await json_body(request))
        except (ValueError, TypeError) as err:
            raise bad_request("InvalidFault", str(err)) from None
        return json_response(fault, 201)

    async def list_faults(request: Request) -> Response:
        return json_response({"value": nodes.list_faults(ctx)})

    async def clear_faults(request: Request) -> Response:
        nodes.clear_faults(ctx)
        return empty(204)

    async def put_preloaded(request: Request) -> Response:
        body = await json_body(request)
        image_id = body.get("image_id") or ""
        if not pool_model.is_custom_image_id(image_id):
            raise bad_request("InvalidImageId", f"'{image_id}' is not a Compute image id.")
        digests = []
        for ref in body.get("images") or []:
            try:
                digests.append(resolve_image(ctx, ref, principals.DEV_SP_OBJECT_ID)["digest"])
            except ImagePullError as err:
                raise bad_request("ImageNotFound", err.message) from None
        nodes.record_preloaded(ctx, image_id, digests)
        return json_response({"image_id": image_id, "digests": digests})

    router.add("GET", BATCH_PREFIX + "/nodes", get_nodes, auth="none")
    router.add("GET", BATCH_PREFIX + "/accounts/{name}/quota", get_quota, auth="none")
    router.add("PUT", BATCH_PREFIX + "/accounts/{name}/quota", put_quota, auth="none")
    router.add("POST", BATCH_PREFIX + "/faults", add_fault, auth="none")
    router.add("GET", BATCH_PREFIX + "/faults", list_faults, auth="none")
    router.add("DELETE", BATCH_PREFIX + "/faults", clear_faults, auth="none")
    router.add("PUT", BATCH_PREFIX + "/preloaded-images", put_preloaded, auth="none")
