"""Admin route of Container Instances, outside Azure's namespace (no token needed):

GET /_localazure/containerinstance/usage   every container group ever run (deleted ones too):
                                           its CPU and memory requests, billed seconds and cost
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from localazure.admin.routes import PREFIX
from localazure.containerinstance import runner
from localazure.core.context import Context
from localazure.core.http import json_response
from localazure.core.router import Router


def register(router: Router, ctx: Context) -> None:
    async def get_usage(request: Request) -> Response:
        return json_response(runner.usage_report(ctx, ctx.clock()))

    router.add("GET", PREFIX + "/containerinstance/usage", get_usage, auth="none")
