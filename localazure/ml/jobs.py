"""Command jobs (``.../workspaces/{ws}/jobs/{name}``): submission, GET and list with the live
status, cancel; and the run record (kind ``ml-run``) that the job runner (``job_runner``) moves
through AML's lifecycle:

    NotStarted -> Queued (waiting for a node) -> Preparing (node provisioning, image pull)
    -> Running -> Finalizing -> Completed | Failed;  CancelRequested -> Canceled

A failed run carries its error in run history (``runs/{name}/details`` -> ``error.error``): a
category ``code`` (``UserError`` or ``SystemError``), a ``message`` as AML words it, and the
precise cause in ``innerError.code``:

    ImagePullUnauthorized, ImageNotFound, RegistryNotFound  the image could not be pulled
    ImagePullTransientError     the registry failed the pull (transient: a retry may work)
    NestedVirtualizationUnavailable  the WAA container found no /dev/kvm (TrustedLaunch
                                or a VM size without nested virtualization)
    UserProcessFailed           the command exited with a non-zero code
    JobTimeout                  the job ran longer than ``limits.timeout``
    NodePreempted               the (low-priority) node was preempted
    NodeLost                    the emulator restarted while the job ran (see ``job_runner``)
    ComputeDeleted              the cluster was deleted under the job

Deviations: one node per job (``resources.instanceCount`` must be 1); no code upload (the
command carries the script, e.g. as a bash heredoc); ``uri_folder`` inputs on a datastore are
materialized when the container starts (``job_inputs``), other inputs and outputs are kept but
not materialized, and no ``default`` output is added (in Azure it points at the workspace artifact
store, from which the SDK would then stream logs).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.resources import now_iso, resource_or_404, system_data
from localazure.authorization.access import covers
from localazure.core import operations
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request
from localazure.core.http import empty, json_body, json_response, require_api_version
from localazure.core.router import Router
from localazure.ml import (
    COMPUTE_TYPE,
    JOB_TYPE,
    NAMESPACE,
    WORKSPACE_PATH,
    computes,
    environments,
    parse_duration,
    workspaces,
)

READ = f"{JOB_TYPE}/read"
WRITE = f"{JOB_TYPE}/write"
CANCEL = f"{JOB_TYPE}/cancel/action"
RUN_KIND = "ml-run"
ACTIVE = ("NotStarted", "Queued", "Preparing", "Running", "Finalizing", "CancelRequested")
TERMINAL = ("Completed", "Failed", "Canceled")
_MUTABLE = ("description", "displayName", "tags", "properties", "isArchived")
_SPEC = ("command", "environmentId", "computeId", "environmentVariables", "limits")


# -- run records ----------------------------------------------------------------------------------


def job_id(workspace: dict[str, Any], name: str) -> str:
    return f"{workspace['id']}/jobs/{name}"


def get_run(ctx: Context, job_resource_id: str) -> dict[str, Any] | None:
    return ctx.store.get(RUN_KIND, job_resource_id.lower())


def save_run(ctx: Context, run: dict[str, Any]) -> None:
    ctx.store.put(RUN_KIND, run["key"], run)


def all_runs(ctx: Context) -> list[dict[str, Any]]:
    return sorted(ctx.store.values(RUN_KIND), key=lambda r: r["created_at"])


def run_dir(ctx: Context, run: dict[str, Any]) -> Path:
    return ctx.settings.state_dir / "ml" / "runs" / run["workspace_uuid"] / run["name"]


def std_log_path(ctx: Context, run: dict[str, Any]) -> Path:
    return run_dir(ctx, run) / "user_logs" / "std_log.txt"


def lifecycle_log_path(ctx: Context, run: dict[str, Any]) -> Path:
    return run_dir(ctx, run) / "system_logs" / "lifecycler.log"


def note(ctx: Context, run: dict[str, Any], message: str) -> None:
    """A line of the run's system log, as AML's lifecycler writes one."""
    path = lifecycle_log_path(ctx, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"{now_iso()} | lifecycler | {message}\n")


def set_status(run: dict[str, Any], status: str, now: float) -> None:
    run["status"] = status
    run["history"].append([status, now])
    if status == "Running" and run["start_time"] is None:
        run["start_time"] = now
    if status in TERMINAL:
        run["end_time"] = now


def fail(
    run: dict[str, Any], now: float, category: str, code: str, message: str, status: str = "Failed"
) -> None:
    run["error"] = {"code": category, "message": message, "innerError": {"code": code}}
    set_status(run, status, now)


def forget_under(ctx: Context, resource_id: str) -> None:
    """Delete hook: runs of deleted workspaces (or groups) go with them, with their files."""
    for run in all_runs(ctx):
        if covers(resource_id, run["workspace_id"]):
            shutil.rmtree(run_dir(ctx, run), ignore_errors=True)
            ctx.store.delete(RUN_KIND, run["key"])


def remove_orphan_files(ctx: Context) -> None:
    """Run directories whose run no longer exists (after a reset) are deleted."""
    root = ctx.settings.state_dir / "ml" / "runs"
    if not root.is_dir():
        return
    kept = {run_dir(ctx, run) for run in all_runs(ctx)}
    for workspace_dir in root.iterdir():
        for directory in workspace_dir.iterdir():
            if directory not in kept:
                shutil.rmtree(directory, ignore_errors=True)


# -- wire -----------------------------------------------------------------------------------------


def services(ctx: Context, workspace: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``services`` of a job GET; ``jobs.stream`` prints the Studio endpoint."""
    host = ctx.endpoint.removeprefix("https://")

    def service(kind: str, endpoint: str) -> dict[str, Any]:
        return {
            "jobServiceType": kind,
            "port": None,
            "endpoint": endpoint,
            "status": None,
            "errorMessage": None,
            "properties": None,
            "nodes": None,
        }

    return {
        "Tracking": service("Tracking", f"azureml://{host}/mlflow/v1.0{workspace['id']}?"),
        "Studio": service(
            "Studio",
            f"https://ml.azure.com/runs/{name}?wsid={workspace['id']}&tid={ctx.settings.tenant_id}",
        ),
    }


def view(resource: dict[str, Any], run: dict[str, Any] | None) -> dict[str, Any]:
    resource["properties"]["status"] = run["status"] if run else "NotStarted"
    return resource


def _compute_for(ctx: Context, workspace: dict[str, Any], compute: Any) -> dict[str, Any]:
    name = str(compute or "").rstrip("/").split("/")[-1]
    resource = ctx.store.get_resource(str(compute)) if str(compute).startswith("/") else None
    resource = resource or ctx.store.get_resource(computes.compute_id(workspace, name))
    if (
        not compute
        or resource is None
        or resource["type"].lower() != COMPUTE_TYPE.lower()
        or not covers(workspace["id"], resource["id"])
    ):
        raise computes.compute_not_found(workspace["name"], name or "(none)")
    return resource


def _environment_for(ctx: Context, workspace: dict[str, Any], environment_id: Any) -> dict:
    text = str(environment_id or "")
    if not text:
        raise bad_request("UserError", "A command job needs an environment (environmentId).")
    if not text.startswith("/subscriptions/"):
        raise bad_request(
            "UserError",
            f"Environment '{text}' cannot be used in localazure: only environment versions of "
            "this workspace (an ARM id .../environments/{name}/versions/{version}) are "
            "supported, not registry or curated environments.",
        )
    version = environments.find_version(ctx, text)
    if version is None or not covers(workspace["id"], version["id"]):
        raise bad_request(
            "UserError",
            f"Environment version '{text}' was not found in workspace '{workspace['name']}'; "
            "create it first (ml_client.environments.create_or_update).",
        )
    return version


def _timeout_s(limits: dict[str, Any] | None) -> float | None:
    timeout = (limits or {}).get("timeout")
    if not timeout:
        return None
    try:
        return parse_duration(timeout)
    except ValueError as err:
        raise bad_request("UserError", f"limits.timeout: {err}.") from None


def _validate(ctx: Context, workspace: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """Check a submitted command job; return what the run needs to know."""
    job_type = props.get("jobType")
    if job_type != "Command":
        raise bad_request(
            "UserError",
            f"Job type '{job_type}' is not supported by localazure; submit a command job.",
        )
    if not str(props.get("command") or "").strip():
        raise bad_request("UserError", "A command job needs a non-empty command.")
    if props.get("codeId"):
        raise bad_request(
            "UserError",
            "Code snapshots (codeId) are not supported by localazure, which emulates no "
            "datastore: embed the script in the command instead.",
        )
    instances = (props.get("resources") or {}).get("instanceCount") or 1
    if instances != 1:
        raise bad_request(
            "UserError",
            f"resources.instanceCount is {instances}; localazure runs each command job on "
            "exactly one node (instanceCount 1).",
        )
    compute = _compute_for(ctx, workspace, props.get("computeId"))
    environment = _environment_for(ctx, workspace, props.get("environmentId"))
    return {
        "compute": compute,
        "environment": environment,
        "timeout_s": _timeout_s(props.get("limits")),
    }


def _new_run(
    ctx: Context, workspace: dict[str, Any], resource: dict[str, Any], checked: dict, caller: Any
) -> dict[str, Any]:
    number = 1 + sum(1 for r in all_runs(ctx) if r["workspace_id"] == workspace["id"])
    now = ctx.clock()
    return {
        "key": resource["id"].lower(),
        "job_id": resource["id"],
        "name": resource["name"],
        "run_uuid": str(uuid.uuid4()),
        "run_number": number,
        "workspace_id": workspace["id"],
        "workspace_uuid": workspace["properties"]["workspaceId"],
        "location": workspace["location"],
        "compute_id": checked["compute"]["id"],
        "image": environments.image_of(ctx, checked["environment"]),
        "timeout_s": checked["timeout_s"],
        "user_id": str(caller),
        "status": "NotStarted",
        "history": [["NotStarted", now]],
        "created_at": now,
        "start_time": None,
        "end_time": None,
        "node_id": None,
        "image_digest": None,
        "prepare_until": None,
        "pending_error": None,
        "fault": None,
        "process_started_at": None,
        "frozen": False,
        "exit_code": None,
        "finalize_until": None,
        "kill_sent_at": None,
        "error": None,
        "revision": 1,
    }


def register(router: Router, ctx: Context) -> None:
    async def put_job(request: Request, sub: str, rg: str, workspace: str, name: str) -> Response:
        require_api_version(request)
        caller = request.state.caller
        ws = request.state.parent
        rid = job_id(ws, name)
        body = await json_body(request)
        props = body.get("properties") or {}
        with ctx.store.transaction():
            existing = ctx.store.get_resource(rid)
            if existing is not None:
                old = existing["properties"]
                changed = [k for k in _SPEC if k in props and props[k] != old.get(k)]
                if changed:
                    raise AzureError(
                        409,
                        "UserError",
                        f"Job '{name}' already exists with a different {', '.join(changed)}; "
                        "a job's specification cannot change. Submit it under a new name.",
                    )
                old.update({k: props[k] for k in _MUTABLE if k in props})
                existing["systemData"] = system_data(existing, caller)
                ctx.store.put_resource(existing)
                return json_response(view(existing, get_run(ctx, rid)))
            checked = _validate(ctx, ws, props)
            resource = {
                "id": rid,
                "name": name,
                "type": JOB_TYPE,
                "systemData": system_data(None, caller),
                "properties": {
                    "description": props.get("description"),
                    "tags": props.get("tags") or {},
                    "properties": {
                        **(props.get("properties") or {}),
                        "_azureml.ComputeTargetType": "amlctrain",
                    },
                    "displayName": props.get("displayName") or name,
                    "status": "NotStarted",
                    "experimentName": props.get("experimentName") or "Default",
                    "services": services(ctx, ws, name),
                    "computeId": checked["compute"]["id"],
                    "isArchived": bool(props.get("isArchived", False)),
                    "identity": props.get("identity"),
                    "componentId": props.get("componentId"),
                    "parentJobName": props.get("parentJobName"),
                    "notificationSetting": props.get("notificationSetting"),
                    "jobType": "Command",
                    "resources": {
                        "instanceCount": 1,
                        "properties": {},
                        **(props.get("resources") or {}),
                    },
                    "parameters": {},
                    "codeId": None,
                    "command": props["command"],
                    "environmentId": checked["environment"]["id"],
                    "environmentVariables": props.get("environmentVariables") or {},
                    "distribution": props.get("distribution"),
                    "inputs": props.get("inputs") or {},
                    "outputs": props.get("outputs") or {},
                    "limits": props.get("limits") or {"jobLimitsType": "Command"},
                    "queueSettings": props.get("queueSettings") or {"jobTier": "Null"},
                },
            }
            ctx.store.put_resource(resource)
            run = _new_run(ctx, ws, resource, checked, caller)
            save_run(ctx, run)
        return json_response(view(resource, run), 201)

    async def get_job(request: Request, sub: str, rg: str, workspace: str, name: str) -> Response:
        require_api_version(request)
        ws = request.state.parent
        rid = job_id(ws, name)
        resource = resource_or_404(ctx, rid, JOB_TYPE, f"{ws['name']}/jobs/{name}", rg)
        return json_response(view(resource, get_run(ctx, rid)))

    async def list_jobs(request: Request, sub: str, rg: str, workspace: str) -> Response:
        require_api_version(request)
        ws = request.state.parent
        wanted = (request.query_params.get("listViewType") or "ActiveOnly").lower()
        items = []
        for resource in ctx.store.list_resources(type=JOB_TYPE, parent=ws["id"]):
            archived = resource["properties"]["isArchived"]
            if (wanted == "activeonly" and archived) or (wanted == "archivedonly" and not archived):
                continue
            items.append(view(resource, get_run(ctx, resource["id"])))
        items.reverse()
        return json_response({"value": items, "nextLink": None})

    async def cancel_job(
        request: Request, sub: str, rg: str, workspace: str, name: str
    ) -> Response:
        api_version = require_api_version(request)
        ws = request.state.parent
        rid = job_id(ws, name)
        resource_or_404(ctx, rid, JOB_TYPE, f"{ws['name']}/jobs/{name}", rg)
        with ctx.store.transaction():
            run = get_run(ctx, rid)
            if run is not None and run["status"] in ACTIVE and run["status"] != "CancelRequested":
                set_status(run, "CancelRequested", ctx.clock())
                save_run(ctx, run)
        op = operations.start(
            ctx, namespace=NAMESPACE, location=ws["location"], kind="ml.job.cancel", params={}
        )
        return empty(202, headers=operations.headers(ctx, op, api_version))

    jobs = WORKSPACE_PATH + "/jobs"
    in_ws = workspaces.in_workspace(ctx)
    job = "{parent}/jobs/{name}"
    router.add("PUT", jobs + "/{name}", put_job, parent=in_ws, action=WRITE, scope=job)
    router.add("GET", jobs + "/{name}", get_job, parent=in_ws, action=READ, scope=job)
    router.add("GET", jobs, list_jobs, parent=in_ws, action=READ)
    router.add("POST", jobs + "/{name}/cancel", cancel_job, parent=in_ws, action=CANCEL, scope=job)


@operations.on_complete("ml.job.cancel")
def _cancel_accepted(ctx: Context, params: dict[str, Any]) -> None:
    return None
