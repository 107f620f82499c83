"""The run-history service (``/history/v1.0/...``, found through the workspace's discoveryUrl)
and the runs' log files.

``GET .../runs/{name}/details`` is what ``ml_client.jobs.stream`` polls: its ``status``, its
``error`` (for a failed run) and its ``logFiles``, a map from log name (``user_logs/std_log.txt``,
``system_logs/lifecycler.log``) to a URL that reads the log. A log appears once it has content:
``std_log.txt`` when the container's process starts.

Deviation: Azure's ``logFiles`` URLs are SAS URLs of blobs in the workspace's storage account;
the emulator's point back at itself (``/mlstorage/{workspaceId}/ExperimentRun/dcid.{run}/...``)
with the same contract: no bearer token, a signature and an expiry in the query, and ranged
reads (``Range`` or ``x-ms-range: bytes=<offset>-``: 206 with the new bytes, 416 when there are
none), so a reader can follow a log cheaply from an offset.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from localazure.authorization.access import require
from localazure.core.context import Context
from localazure.core.errors import not_found
from localazure.core.http import json_body, json_response
from localazure.core.router import Router
from localazure.core.signed_blobs import LogSigner, blob_error, ranged_file
from localazure.core.tokens import ML_AUDIENCES
from localazure.ml import NAMESPACE, WORKSPACE_TYPE, jobs, workspaces

RUNS_READ = f"{WORKSPACE_TYPE}/experiments/runs/read"
RUNS_WRITE = f"{WORKSPACE_TYPE}/experiments/runs/write"
LOG_URL_LIFETIME_S = 24 * 3600
LOG_FOLDERS = ("user_logs", "system_logs")
_LOG_FILE = re.compile(r"^[A-Za-z0-9_.-]+\.(?:txt|log)$")
HISTORY_PATH = (
    "/history/v1.0/subscriptions/{sub}/resourceGroups/{rg}/providers/"
    f"{NAMESPACE}/workspaces/{{workspace}}"
)


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def log_path(workspace_uuid: str, run_name: str, name: str) -> str:
    return f"/mlstorage/{workspace_uuid}/ExperimentRun/dcid.{run_name}/{name}"


def log_files(ctx: Context, signer: LogSigner, run: dict[str, Any]) -> dict[str, str]:
    """Log name -> signed URL, for the logs that have content."""
    expiry = int(time.time()) + LOG_URL_LIFETIME_S
    files = {}
    for name, path in (
        ("system_logs/lifecycler.log", jobs.lifecycle_log_path(ctx, run)),
        ("user_logs/std_log.txt", jobs.std_log_path(ctx, run)),
    ):
        if path.exists():
            url_path = log_path(run["workspace_uuid"], run["name"], name)
            sig = signer.signature(url_path, expiry)
            files[name] = (
                f"{ctx.endpoint}{quote(url_path)}?sv=2019-07-07&sr=b&sp=r&se={expiry}&sig={sig}"
            )
    return files


def error_wire(run: dict[str, Any]) -> dict[str, Any] | None:
    error = run["error"]
    if error is None:
        return None
    return {
        "error": {
            "code": error["code"],
            "severity": None,
            "message": error["message"],
            "messageFormat": None,
            "messageParameters": {},
            "referenceCode": None,
            "detailsUri": None,
            "target": None,
            "details": [],
            "innerError": error["innerError"],
            "additionalInfo": None,
        },
        "correlation": {"operation": run["run_uuid"], "request": run["run_uuid"][:16]},
        "environment": run["location"],
        "location": run["location"],
        "time": iso(run["end_time"]),
        "componentName": "execution",
    }


def run_wire(ctx: Context, run: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """A run as run history returns it (``Run``), from the run record and the job resource."""
    props = job["properties"]
    compute_name = run["compute_id"].rsplit("/", 1)[-1]
    end = run["end_time"] if run["end_time"] is not None else ctx.clock()
    duration = max(0.0, end - run["start_time"]) if run["start_time"] is not None else 0.0
    return {
        "runNumber": run["run_number"],
        "rootRunId": run["name"],
        "createdUtc": iso(run["created_at"]),
        "createdBy": {"userObjectId": run["user_id"], "userTenantId": ctx.settings.tenant_id},
        "userId": run["user_id"],
        "tokenExpiryTimeUtc": None,
        "error": error_wire(run),
        "warnings": None,
        "revision": run["revision"],
        "statusRevision": len(run["history"]),
        "runUuid": run["run_uuid"],
        "parentRunUuid": None,
        "rootRunUuid": run["run_uuid"],
        "lastStartTimeUtc": iso(run["start_time"]),
        "currentComputeTime": None,
        "computeDuration": _timespan(duration),
        "effectiveStartTimeUtc": iso(run["start_time"]),
        "lastModifiedBy": {"userObjectId": run["user_id"]},
        "lastModifiedUtc": iso(run["history"][-1][1]),
        "duration": _timespan(duration),
        "cancelationReason": None,
        "runId": run["name"],
        "parentRunId": None,
        "experimentId": None,
        "status": run["status"],
        "startTimeUtc": iso(run["start_time"]),
        "endTimeUtc": iso(run["end_time"]),
        "scheduleId": None,
        "displayName": props["displayName"],
        "name": None,
        "dataContainerId": f"dcid.{run['name']}",
        "description": props["description"],
        "hidden": False,
        "runType": "azureml.scriptrun",
        "runTypeV2": {
            "orchestrator": None,
            "traits": ["azureml.scriptrun"],
            "attribution": "CommonRuntime",
            "computeType": "AmlcTrain",
        },
        "properties": props["properties"],
        "parameters": {},
        "actionUris": {},
        "scriptName": None,
        "target": compute_name,
        "uniqueChildRunComputeTargets": [],
        "tags": props["tags"],
        "settings": {},
        "services": {},
        "inputDatasets": [],
        "outputDatasets": [],
        "runDefinition": None,
        "jobSpecification": None,
        "primaryMetricName": None,
        "createdFrom": None,
        "cancelUri": None,
        "completeUri": None,
        "diagnosticsUri": None,
        "computeRequest": {"nodeCount": 1, "gpuCount": 0},
        "compute": {"target": compute_name, "targetType": "AmlCompute", "instanceCount": 1},
        "retainForLifetimeOfWorkspace": False,
        "queueingInfo": None,
        "inputs": None,
        "outputs": None,
    }


def details_wire(
    ctx: Context, signer: LogSigner, run: dict[str, Any], job: dict[str, Any]
) -> dict[str, Any]:
    """``RunDetails``: the run with its log files."""
    return {**run_wire(ctx, run, job), "logFiles": log_files(ctx, signer, run), "jobCost": None}


def _timespan(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{int((seconds - whole) * 1e7):07d}"


def register(router: Router, ctx: Context) -> None:
    signer = LogSigner(ctx.settings.state_dir / "ml-log-signing-key")
    audiences = (*ML_AUDIENCES, ctx.endpoint)

    def load(
        request: Request, sub: str, rg: str, workspace: str, run_id: str, action: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        caller = ctx.issuer.verify(request.headers.get("authorization"), audiences)
        request.state.caller = caller
        ws = workspaces.load(ctx, sub, rg, workspace)
        require(ctx, caller, action, ws["id"])
        rid = jobs.job_id(ws, run_id)
        run, job = jobs.get_run(ctx, rid), ctx.store.get_resource(rid)
        if run is None or job is None:
            raise not_found("UserError", f"Run {run_id} was not found")
        return run, job

    async def get_details(
        request: Request, sub: str, rg: str, workspace: str, run_id: str
    ) -> Response:
        run, job = load(request, sub, rg, workspace, run_id, RUNS_READ)
        return json_response(details_wire(ctx, signer, run, job))

    async def get_run(request: Request, sub: str, rg: str, workspace: str, run_id: str) -> Response:
        run, job = load(request, sub, rg, workspace, run_id, RUNS_READ)
        return json_response(run_wire(ctx, run, job))

    async def get_run_in_experiment(
        request: Request, sub: str, rg: str, workspace: str, experiment: str, run_id: str
    ) -> Response:
        return await get_run(request, sub, rg, workspace, run_id)

    async def patch_run(
        request: Request, sub: str, rg: str, workspace: str, experiment: str, run_id: str
    ) -> Response:
        """The metadata update ``jobs.create_or_update`` sends for a job it fetched."""
        _, job = load(request, sub, rg, workspace, run_id, RUNS_WRITE)
        body = await json_body(request)
        with ctx.store.transaction():
            run = jobs.get_run(ctx, job["id"])
            props = job["properties"]
            for field, target in (("displayName", "displayName"), ("description", "description")):
                if body.get(field) is not None:
                    props[target] = body[field]
            for field in ("tags", "properties"):
                if body.get(field):
                    props[field] = {**props[field], **body[field]}
            run["revision"] += 1
            ctx.store.put_resource(job)
            jobs.save_run(ctx, run)
        return json_response(run_wire(ctx, run, job))

    async def read_log(
        request: Request, workspace_uuid: str, dcid: str, folder: str, file: str
    ) -> Response:
        path = f"/mlstorage/{workspace_uuid}/ExperimentRun/{dcid}/{folder}/{file}"
        params = request.query_params
        if not signer.valid(path, params.get("se", ""), params.get("sig", "")):
            return blob_error(
                403,
                "AuthenticationFailed",
                "Server failed to authenticate the request. Make sure the value of "
                "Authorization header is formed correctly including the signature.",
            )
        run = _run_by_log(ctx, workspace_uuid, dcid.removeprefix("dcid."))
        if run is None or folder not in LOG_FOLDERS or not _LOG_FILE.match(file):
            return blob_error(404, "BlobNotFound", "The specified blob does not exist.")
        target = jobs.run_dir(ctx, run) / folder / file
        if not target.is_file():
            return blob_error(404, "BlobNotFound", "The specified blob does not exist.")
        return ranged_file(request, target)

    router.add("GET", HISTORY_PATH + "/runs/{run_id}/details", get_details, auth="custom")
    router.add("GET", HISTORY_PATH + "/runs/{run_id}", get_run, auth="custom")
    run_in_experiment = HISTORY_PATH + "/experiments/{experiment}/runs/{run_id}"
    router.add("GET", run_in_experiment, get_run_in_experiment, auth="custom")
    router.add("PATCH", run_in_experiment, patch_run, auth="custom")
    router.add(
        "GET,HEAD",
        "/mlstorage/{workspace_uuid}/ExperimentRun/{dcid}/{folder}/{file}",
        read_log,
        auth="none",
    )


def _run_by_log(ctx: Context, workspace_uuid: str, run_name: str) -> dict[str, Any] | None:
    for run in jobs.all_runs(ctx):
        if run["workspace_uuid"] == workspace_uuid and run["name"] == run_name:
            return run
    return None
