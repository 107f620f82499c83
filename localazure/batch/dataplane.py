"""The Batch data plane at ``<account>.<region>.batch.azure.com``: pools (get, list, resize,
stop resize), compute nodes (get, list), jobs (add, get, list, terminate, delete), tasks (add,
add collection, get, list, terminate, delete) and task files (``stdout.txt``, ``stderr.txt``:
get with ``ocp-range``/``Range``, properties, list). Every request is authenticated
(``shared_key``); answers use Batch's error shape (``jobs.BatchError``)."""

from __future__ import annotations

import email.utils
import json
import re
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.batch import (
    POOL_TYPE,
    accounts,
    jobs,
    nodes,
    pool_model,
    pool_views,
    shared_key,
    task_runner,
)
from localazure.batch.jobs import BatchError, iso
from localazure.batch.pools import stop_pool_resize
from localazure.core.context import Context
from localazure.core.http import empty, json_response
from localazure.core.router import Router
from localazure.nodes import pool as node_pool

ODATA = "https://batch.core.windows.net/$metadata#"
TASK_FILES = ("stdout.txt", "stderr.txt")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise BatchError(400, "InvalidRequestBody", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BatchError(400, "InvalidRequestBody", "The request body must be a JSON object.")
    return body


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _created(url: str, now: float) -> Response:
    return empty(
        201,
        headers={
            "Location": url,
            "DataServiceId": url,
            "ETag": '"0x1"',
            "Last-Modified": http_date(now),
        },
    )


def register(router: Router, ctx: Context) -> None:
    async def context_of(request: Request, login_host: str) -> tuple[dict[str, Any], str]:
        account = accounts.by_host(ctx, login_host)
        if account is None:
            raise BatchError(404, "AccountNotFound", f"No Batch account answers at '{login_host}'.")
        if not request.query_params.get("api-version"):
            raise BatchError(
                400,
                "MissingRequiredQueryParameter",
                "A query parameter that's mandatory for this request is not specified.",
                {"QueryParameterName": "api-version"},
            )
        request.state.caller = shared_key.authenticate(ctx, request, account)
        return account, f"https://{accounts.endpoint_host(account)}"

    def pool_of(account: dict[str, Any], pool_id: str) -> dict[str, Any]:
        pool = ctx.store.get_resource(f"{account['id']}/pools/{pool_id}")
        if pool is None:
            raise BatchError(404, "PoolNotFound", "The specified pool does not exist.")
        return pool

    # -- pools ------------------------------------------------------------------------------------

    async def list_pools(request: Request, login_host: str) -> Response:
        account, base = await context_of(request, login_host)
        items = ctx.store.list_resources(type=POOL_TYPE, parent=account["id"])
        return json_response(
            {
                "odata.metadata": ODATA + "pools",
                "value": [pool_views.data_view(ctx, base, p) for p in items],
            }
        )

    async def get_pool(request: Request, login_host: str, pool: str) -> Response:
        account, base = await context_of(request, login_host)
        return json_response(pool_views.data_view(ctx, base, pool_of(account, pool)))

    async def resize_pool(request: Request, login_host: str, pool: str) -> Response:
        account, _ = await context_of(request, login_host)
        record = pool_of(account, pool)
        body = _json_body(await request.body())
        if (record["properties"].get("scaleSettings") or {}).get("autoScale"):
            raise BatchError(
                409, "AutoScalingEnabled", "The specified pool has auto scale enabled."
            )
        operation = pool_model.resize(ctx, record["id"]) or {}
        if operation.get("state") == "resizing":
            raise BatchError(409, "PoolNotSteady", "The specified pool is not in a steady state.")
        fixed = {
            "targetDedicatedNodes": body.get("targetDedicatedNodes", 0),
            "targetLowPriorityNodes": body.get("targetLowPriorityNodes", 0),
            "resizeTimeout": body.get("resizeTimeout") or pool_model.DEFAULT_RESIZE_TIMEOUT,
            "nodeDeallocationOption": body.get("nodeDeallocationOption") or "requeue",
        }
        try:
            pool_model.check_scale({"fixedScale": fixed}, pool_model.size_of(record["properties"]))
        except Exception as err:  # AzureError from validation -> Batch's shape
            raise BatchError(
                400, "InvalidPropertyValue", getattr(err, "message", str(err))
            ) from None
        with ctx.store.transaction():
            record["properties"]["scaleSettings"] = {"fixedScale": fixed}
            record["modified_ts"] = ctx.clock()
            ctx.store.put_resource(record)
            pool_model.resize_from_scale(ctx, record, ctx.clock())
        return empty(202, headers={"ETag": pool_views.pool_etag(record)})

    async def stop_resize(request: Request, login_host: str, pool: str) -> Response:
        account, _ = await context_of(request, login_host)
        stop_pool_resize(ctx, pool_of(account, pool))
        return empty(202)

    # -- nodes ------------------------------------------------------------------------------------

    def node_wire(base: str, pool: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
        info = node["batch"]
        url = f"{base}/pools/{pool['name']}/nodes/{node['id']}"
        start = info["start_task"]
        body = {
            "id": node["id"],
            "url": url,
            "state": nodes.state(node),
            "schedulingState": "enabled",
            "stateTransitionTime": iso(info["state_time"]),
            "allocationTime": iso(node["acquired_at"]),
            "lastBootTime": iso(node["ready_at"]),
            "ipAddress": node["private_ip"],
            "affinityId": f"TVM:{node['id']}",
            "vmSize": node["vm_size"].lower(),
            "isDedicated": node["priority"] == "Dedicated",
            "totalTasksRun": info["tasks_run"],
            "totalTasksSucceeded": info["tasks_succeeded"],
            "runningTasksCount": 1 if node["run_id"] else 0,
            "runningTaskSlotsCount": 1 if node["run_id"] else 0,
            "errors": info["errors"] or None,
            "nodeAgentInfo": {"version": "1.11.0", "lastUpdateTime": iso(node["acquired_at"])},
            "virtualMachineInfo": {
                "imageReference": pool_model.vm_configuration(pool).get("imageReference")
            },
        }
        if pool["properties"].get("startTask"):
            body["startTask"] = pool["properties"]["startTask"]
        if start:
            body["startTaskInfo"] = {
                "state": start["state"],
                "startTime": iso(start["startTime"]),
                "endTime": iso(start["endTime"]),
                "exitCode": start["exitCode"],
                "failureInfo": start["failureInfo"],
                "retryCount": start["retryCount"],
                "lastRetryTime": iso(start["lastRetryTime"]),
                "result": start["result"],
            }
        # Batch lists the tasks whose state changed on the node lately: the running one, and
        # those that ended or were requeued off it (how a client learns where a task last ran).
        keys = info["recent_tasks"] + ([node["run_id"]] if node["run_id"] else [])
        recent = [ctx.store.get(jobs.TASK_KIND, key) for key in dict.fromkeys(keys)]
        if any(recent):
            body["recentTasks"] = [
                {
                    "taskUrl": f"{base}/jobs/{task['job_id']}/tasks/{task['id']}",
                    "jobId": task["job_id"],
                    "taskId": task["id"],
                    "taskState": task["state"],
                }
                for task in recent
                if task
            ]
        return body

    async def list_nodes(request: Request, login_host: str, pool: str) -> Response:
        account, base = await context_of(request, login_host)
        record = pool_of(account, pool)
        items = [node_wire(base, record, n) for n in nodes.pool_nodes(ctx, record["id"])]
        return json_response({"odata.metadata": ODATA + "nodes", "value": items})

    async def get_node(request: Request, login_host: str, pool: str, node: str) -> Response:
        account, base = await context_of(request, login_host)
        record = pool_of(account, pool)
        for found in nodes.pool_nodes(ctx, record["id"]):
            if found["id"] == node:
                return json_response(node_wire(base, record, found))
        raise BatchError(404, "NodeNotFound", "The specified node does not exist.")

    # -- jobs -------------------------------------------------------------------------------------

    async def add_job(request: Request, login_host: str) -> Response:
        account, base = await context_of(request, login_host)
        body = _json_body(await request.body())
        now = ctx.clock()
        job = jobs.new_job(account["id"], body, now)
        pool_of(account, job["poolId"])
        with ctx.store.transaction():
            if ctx.store.get(jobs.JOB_KIND, jobs.job_key(account["id"], job["id"])):
                raise BatchError(409, "JobExists", "The specified job already exists.")
            jobs.save_job(ctx, job, now)
        return _created(f"{base}/jobs/{job['id']}", now)

    async def list_jobs(request: Request, login_host: str) -> Response:
        account, base = await context_of(request, login_host)
        items = [jobs.job_wire(base, j) for j in jobs.jobs_of(ctx, account["id"])]
        return json_response({"odata.metadata": ODATA + "jobs", "value": items})

    async def get_job(request: Request, login_host: str, job: str) -> Response:
        account, base = await context_of(request, login_host)
        return json_response(jobs.job_wire(base, jobs.get_job(ctx, account["id"], job)))

    async def terminate_job(request: Request, login_host: str, job: str) -> Response:
        account, _ = await context_of(request, login_host)
        body = _json_body(await request.body())
        with ctx.store.transaction():
            record = jobs.get_job(ctx, account["id"], job)
            if record["state"] in jobs.JOB_STATES_DONE or record["state"] == "terminating":
                raise BatchError(
                    409, "JobCompleted", "The specified job is already in a completed state."
                )
            record["executionInfo"]["terminateReason"] = (
                body.get("terminateReason") or "UserTerminate"
            )
            task_runner.terminate_job(ctx, record, ctx.clock())
        return empty(202)

    async def delete_job(request: Request, login_host: str, job: str) -> Response:
        account, _ = await context_of(request, login_host)
        with ctx.store.transaction():
            record = jobs.get_job(ctx, account["id"], job)
            for task in jobs.tasks_of(ctx, account["id"], record["id"]):
                _drop_task(ctx, task)
            ctx.store.delete(jobs.JOB_KIND, jobs.job_key(account["id"], record["id"]))
        return empty(202)

    # -- tasks ------------------------------------------------------------------------------------

    def _new_task(
        account: dict[str, Any], job: dict[str, Any], body: dict[str, Any], now: float
    ) -> dict:
        if job["state"] != "active":
            raise BatchError(
                409, "JobNotActive", f"The specified job is in the {job['state']} state."
            )
        pool = pool_of(account, job["poolId"])
        has_containers = bool(pool_model.vm_configuration(pool).get("containerConfiguration"))
        task = jobs.new_task(job, body, has_containers, now)
        if ctx.store.get(jobs.TASK_KIND, task["key"]):
            raise BatchError(409, "TaskExists", "The specified task already exists.")
        return task

    async def add_task(request: Request, login_host: str, job: str) -> Response:
        account, base = await context_of(request, login_host)
        body = _json_body(await request.body())
        now = ctx.clock()
        with ctx.store.transaction():
            task = _new_task(account, jobs.get_job(ctx, account["id"], job), body, now)
            jobs.save_task(ctx, task, now)
        return _created(f"{base}/jobs/{task['job_id']}/tasks/{task['id']}", now)

    async def add_task_collection(request: Request, login_host: str, job: str) -> Response:
        account, base = await context_of(request, login_host)
        body = _json_body(await request.body())
        entries = body.get("value") or []
        if len(entries) > 100:
            raise BatchError(
                400, "RequestBodyTooLarge", "A task collection may hold at most 100 tasks."
            )
        now = ctx.clock()
        results = []
        with ctx.store.transaction():
            record = jobs.get_job(ctx, account["id"], job)
            for entry in entries:
                try:
                    task = _new_task(account, record, entry, now)
                except BatchError as err:
                    results.append(
                        {"status": "clientError", "taskId": entry.get("id"), "error": err.body()}
                    )
                    continue
                jobs.save_task(ctx, task, now)
                results.append(
                    {
                        "status": "success",
                        "taskId": task["id"],
                        "eTag": jobs.etag(task),
                        "lastModified": iso(now),
                        "location": f"{base}/jobs/{task['job_id']}/tasks/{task['id']}",
                    }
                )
        return json_response({"value": results})

    def node_of(task: dict[str, Any]) -> dict[str, Any] | None:
        return node_pool.get(ctx, task["node_id"]) if task["node_id"] else None

    async def list_tasks(request: Request, login_host: str, job: str) -> Response:
        account, base = await context_of(request, login_host)
        record = jobs.get_job(ctx, account["id"], job)
        items = [
            jobs.task_wire(base, t, node_of(t))
            for t in jobs.tasks_of(ctx, account["id"], record["id"])
        ]
        return json_response({"odata.metadata": ODATA + "tasks", "value": items})

    async def get_task(request: Request, login_host: str, job: str, task: str) -> Response:
        account, base = await context_of(request, login_host)
        record = jobs.get_task(ctx, account["id"], job, task)
        return json_response(jobs.task_wire(base, record, node_of(record)))

    async def terminate_task(request: Request, login_host: str, job: str, task: str) -> Response:
        account, _ = await context_of(request, login_host)
        with ctx.store.transaction():
            record = jobs.get_task(ctx, account["id"], job, task)
            if record["state"] != "completed" and not record["terminate_reason"]:
                record["terminate_reason"] = "Task Was Ended by User Request"
                jobs.save_task(ctx, record, ctx.clock())
        return empty(204)

    async def delete_task(request: Request, login_host: str, job: str, task: str) -> Response:
        account, _ = await context_of(request, login_host)
        with ctx.store.transaction():
            _drop_task(ctx, jobs.get_task(ctx, account["id"], job, task))
        return empty(200)

    # -- task files -------------------------------------------------------------------------------

    def file_path(account: dict[str, Any], job: str, task: str, name: str) -> tuple[dict, Path]:
        record = jobs.get_task(ctx, account["id"], job, task)
        if name not in TASK_FILES:
            raise BatchError(404, "FileNotFound", f"The specified file '{name}' does not exist.")
        path = jobs.task_dir(ctx, record) / name
        if record["executionInfo"]["startTime"] is None and not path.exists():
            raise BatchError(
                409, "TaskNotStarted", "The task has not started: it has no files yet."
            )
        return record, path

    def file_headers(base: str, record: dict[str, Any], name: str, size: int, mtime: float) -> dict:
        return {
            "ocp-creation-time": http_date(record["creationTime"]),
            "ocp-batch-file-isdirectory": "False",
            "ocp-batch-file-url": f"{base}/jobs/{record['job_id']}/tasks/{record['id']}/files/{name}",
            "ocp-batch-file-mode": "0o100644",
            "Last-Modified": http_date(mtime),
            "Content-Type": "application/octet-stream",
            "x-localazure-file-length": str(size),
        }

    async def get_file(
        request: Request, login_host: str, job: str, task: str, name: str
    ) -> Response:
        account, base = await context_of(request, login_host)
        name = name.lstrip("/")
        record, path = file_path(account, job, task, name)
        data = path.read_bytes() if path.exists() else b""
        mtime = path.stat().st_mtime if path.exists() else record["creationTime"]
        headers = file_headers(base, record, name, len(data), mtime)
        wanted = request.headers.get("ocp-range") or request.headers.get("range")
        if wanted:
            match = _RANGE.match(wanted.strip())
            if not match:
                raise BatchError(
                    400,
                    "InvalidHeaderValue",
                    f"The range '{wanted}' is not bytes=start-end.",
                    {"HeaderName": "ocp-range"},
                )
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            if start >= len(data) and len(data) > 0 or (len(data) == 0 and start > 0):
                raise BatchError(
                    416,
                    "InvalidRange",
                    f"The range '{wanted}' is beyond the file's {len(data)} bytes.",
                )
            data = data[start : end + 1]
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return Response(b"", status_code=200, headers=headers)
        return Response(data, status_code=200, headers=headers)

    async def list_files(request: Request, login_host: str, job: str, task: str) -> Response:
        account, base = await context_of(request, login_host)
        record = jobs.get_task(ctx, account["id"], job, task)
        items = []
        for name in TASK_FILES:
            path = jobs.task_dir(ctx, record) / name
            if path.exists():
                stat = path.stat()
                items.append(
                    {
                        "name": name,
                        "url": f"{base}/jobs/{record['job_id']}/tasks/{record['id']}/files/{name}",
                        "isDirectory": False,
                        "properties": {
                            "creationTime": iso(record["creationTime"]),
                            "lastModified": iso(stat.st_mtime),
                            "contentLength": stat.st_size,
                            "contentType": "application/octet-stream",
                            "fileMode": "0o100644",
                        },
                    }
                )
        return json_response({"odata.metadata": ODATA + "files", "value": items})

    router.add("GET", "/pools", list_pools, auth="custom")
    router.add("GET", "/pools/{pool}", get_pool, auth="custom")
    router.add("POST", "/pools/{pool}/resize", resize_pool, auth="custom")
    router.add("POST", "/pools/{pool}/stopresize", stop_resize, auth="custom")
    router.add("GET", "/pools/{pool}/nodes", list_nodes, auth="custom")
    router.add("GET", "/pools/{pool}/nodes/{node}", get_node, auth="custom")
    router.add("POST", "/jobs", add_job, auth="custom")
    router.add("GET", "/jobs", list_jobs, auth="custom")
    router.add("GET", "/jobs/{job}", get_job, auth="custom")
    router.add("DELETE", "/jobs/{job}", delete_job, auth="custom")
    router.add("POST", "/jobs/{job}/terminate", terminate_job, auth="custom")
    router.add("POST", "/jobs/{job}/tasks", add_task, auth="custom")
    router.add("GET", "/jobs/{job}/tasks", list_tasks, auth="custom")
    router.add("POST", "/jobs/{job}/addtaskcollection", add_task_collection, auth="custom")
    router.add("GET", "/jobs/{job}/tasks/{task}", get_task, auth="custom")
    router.add("DELETE", "/jobs/{job}/tasks/{task}", delete_task, auth="custom")
    router.add("POST", "/jobs/{job}/tasks/{task}/terminate", terminate_task, auth="custom")
    router.add("GET", "/jobs/{job}/tasks/{task}/files", list_files, auth="custom")
    router.add("GET,HEAD", "/jobs/{job}/tasks/{task}/files/{name}", get_file, auth="custom")


def _drop_task(ctx: Context, task: dict[str, Any]) -> None:
    """A deleted task stops (its process is killed by the runner, which no longer sees it)."""
    if task["node_id"]:
        node = node_pool.get(ctx, task["node_id"])
        if node and node["run_id"] == task["key"] and node["released_at"] is None:
            node_pool.finish(ctx, node["id"], ctx.clock())
            node = node_pool.get(ctx, node["id"])
            nodes.set_state(node, "idle", ctx.clock())
            node_pool.save(ctx, node)
    jobs.remove_files(ctx, task)
    ctx.store.delete(jobs.TASK_KIND, task["key"])
