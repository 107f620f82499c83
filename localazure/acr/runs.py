"""ACR Tasks: quick runs of a registry (``az acr build``, azure-mgmt-containerregistry's
``registries.begin_schedule_run`` at api-version 2019-06-01-preview).

- ``POST .../registries/{name}/listBuildSourceUploadUrl``: a signed URL where the client uploads
  its source archive (a tar.gz) with a Put Blob (azure-storage-blob ``BlobClient.from_blob_url``),
  and the ``relativePath`` a run request names as ``sourceLocation``.
- ``POST .../registries/{name}/scheduleRun``: a ``DockerBuildRequest`` (``dockerFilePath``,
  ``imageNames``, ``isPushEnabled``, ``arguments``, ``target``) or an ``EncodedTaskRunRequest``
  (a base64 task file whose steps are ``build`` and ``push``); answers the ``Run`` (``Queued``).
- ``GET .../runs``, ``GET .../runs/{runId}``, ``POST .../runs/{runId}/cancel``,
  ``POST .../runs/{runId}/listLogSasUrl`` (a signed URL of the run's log, read with ranges).

The build is made when the run is scheduled (``acr.build``); its times are simulated: queued
0.1 s, then the base image pull and the new layers at ``LOCALAZURE_ACR_BUILD_SECONDS_PER_GB``
(default 0.06) plus 0.3 s. The status moves on reads, as long-running operations do: when a
read finds the run past its finish time, the images are pushed and the status is final. The
log grows with the run's phases.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response

from localazure.acr import NAMESPACE, REGISTRY_TYPE, build, images
from localazure.arm.resources import in_resource_group, provider_id, resource_or_404
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request, not_found
from localazure.core.http import json_body, json_response, list_page, require_api_version
from localazure.core.router import Router
from localazure.core.signed_blobs import LogSigner, blob_error, ranged_file

RUN_KIND = "acr-run"
COUNTER_KIND = "acr-run-counter"
BUILD_SECONDS_PER_GB_ENV = "LOCALAZURE_ACR_BUILD_SECONDS_PER_GB"
QUEUE_S = 0.1
FIXED_BUILD_S = 0.3
URL_LIFETIME_S = 24 * 3600
SCHEDULE_RUN = f"{REGISTRY_TYPE}/scheduleRun/action"
LIST_UPLOAD_URL = f"{REGISTRY_TYPE}/listBuildSourceUploadUrl/action"
RUNS_READ = f"{REGISTRY_TYPE}/runs/read"
RUNS_WRITE = f"{REGISTRY_TYPE}/runs/write"
LOG_URL = f"{REGISTRY_TYPE}/runs/listLogSasUrl/action"
CANCEL = f"{REGISTRY_TYPE}/runs/cancel/action"
BLOB_PREFIX = "/acrtasks"  # account "acrtasks" for azure-storage-blob's 127.0.0.1 URL parsing


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def _stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y/%m/%d %H:%M:%S")


def _seconds_per_gb() -> float:
    return float(os.environ.get(BUILD_SECONDS_PER_GB_ENV, "0.06"))


def _key(registry_id: str, run_id: str) -> str:
    return f"{registry_id.lower()}|{run_id}"


def uploads_dir(ctx: Context) -> Path:
    return ctx.settings.state_dir / "acr" / "uploads"


def forget_under(ctx: Context, resource_id: str) -> None:
    """Delete hook: runs of registries at or below ``resource_id`` go with them."""
    prefix = resource_id.rstrip("/").lower()
    for run in ctx.store.values(RUN_KIND):
        rid = run["registry_id"].lower()
        if rid == prefix or rid.startswith(prefix + "/"):
            ctx.store.delete(RUN_KIND, _key(run["registry_id"], run["run_id"]))


# -- requests -------------------------------------------------------------------------------------


def _arguments(values: list[dict[str, Any]] | None) -> dict[str, str]:
    return {str(a.get("name")): str(a.get("value", "")) for a in values or [] if a.get("name")}


def _encoded_task(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``build`` and ``push`` steps of a task file, as build requests."""
    try:
        task = yaml.safe_load(base64.b64decode(body.get("encodedTaskContent") or "").decode())
    except (ValueError, yaml.YAMLError) as err:
        raise bad_request(
            "InvalidTaskContent", f"The encoded task could not be read: {err}"
        ) from None
    steps = (task or {}).get("steps") if isinstance(task, dict) else None
    if not steps:
        raise bad_request("InvalidTaskContent", "The task has no steps.")
    requests_: list[dict[str, Any]] = []
    pushed: set[str] = set()
    for step in steps:
        if "build" in step:
            words = str(step["build"]).split()
            names, dockerfile, args, context = [], "Dockerfile", {}, "."
            i = 0
            while i < len(words):
                word = words[i]
                if word in ("-t", "--tag", "--image"):
                    names.append(words[i + 1])
                    i += 2
                elif word in ("-f", "--file"):
                    dockerfile = words[i + 1]
                    i += 2
                elif word == "--build-arg":
                    name, _, value = words[i + 1].partition("=")
                    args[name] = value
                    i += 2
                else:
                    context = word
                    i += 1
            if context not in (".", "./"):
                raise bad_request(
                    "InvalidTaskContent", "The emulator builds only the source root ('.')."
                )
            requests_.append(
                {"imageNames": names, "dockerFilePath": dockerfile, "args": args, "push": False}
            )
        elif "push" in step:
            pushed.update(str(p) for p in step["push"] or [])
        else:
            raise bad_request(
                "InvalidTaskContent",
                "The emulator runs task steps of kind 'build' and 'push' only, not "
                f"{sorted(k for k in step if k not in ('id', 'when', 'timeout'))}.",
            )
    for request in requests_:
        request["push"] = any(name in pushed for name in request["imageNames"])
    return requests_


def _image_names(names: list[str], login_server: str, run_id: str) -> list[str]:
    out = []
    for name in names:
        name = name.replace("{{.Run.ID}}", run_id).replace("$ID", run_id)
        name = name.replace("{{.Run.Registry}}", login_server).replace("$Registry", login_server)
        if not name.lower().startswith(login_server):
            name = f"{login_server}/{name}"
        out.append(name)
    return out


# -- the run --------------------------------------------------------------------------------------


def _plan(
    ctx: Context, registry: dict[str, Any], run_id: str, body: dict[str, Any], now: float
) -> dict[str, Any]:
    """Build now; the record says what happens when."""
    login = registry["properties"]["loginServer"].lower()
    kind = body.get("type")
    if kind == "DockerBuildRequest":
        builds = [
            {
                "imageNames": list(body.get("imageNames") or []),
                "dockerFilePath": body.get("dockerFilePath") or "Dockerfile",
                "args": _arguments(body.get("arguments")),
                "push": bool(body.get("isPushEnabled", True)),
                "target": body.get("target"),
            }
        ]
    elif kind == "EncodedTaskRunRequest":
        builds = _encoded_task(body)
    else:
        raise bad_request(
            "InvalidRunRequest",
            f"The run request type '{kind}' is not supported by the emulator; use "
            "DockerBuildRequest or EncodedTaskRunRequest.",
        )
    platform = body.get("platform") or {}
    if str(platform.get("os", "Linux")).lower() != "linux":
        raise bad_request("InvalidPlatform", "The emulator builds Linux images only.")
    lines: list[tuple[float, str]] = [
        (0.0, "Queued a build with ID: " + run_id),
        (0.0, "Waiting for an agent..."),
    ]
    outputs: list[dict[str, Any]] = []
    error = None
    elapsed = QUEUE_S
    source = body.get("sourceLocation") or ""
    archive_path = uploads_dir(ctx) / source
    lines.append((elapsed, "Downloading source code..."))
    try:
        if not source or not archive_path.is_file() or ".." in source:
            raise build.BuildFailed(
                f"failed to download the source from '{source}': the blob does not exist "
                "(upload it to the URL of listBuildSourceUploadUrl first)"
            )
        context = build.read_context(archive_path.read_bytes())
        lines.append((elapsed, "Finished downloading source code"))
        lines.append((elapsed, f"Logging in to registry: {login}"))
        lines.append((elapsed, f"Successfully logged into {login}"))
        for index, spec in enumerate(builds):
            step = "build" if index == 0 else f"build{index}"
            lines.append(
                (
                    elapsed,
                    f"Executing step ID: {step}. Timeout(sec): 28800, Working directory: '', Network: ''",
                )
            )
            lines.append(
                (elapsed, f"Sending build context to Docker daemon  {context.size / 1000:.1f}kB")
            )
            built = build.build_image(
                ctx, registry, context, spec["dockerFilePath"], spec["args"], spec.get("target")
            )
            new_bytes = built.record["imageSize"] - built.base_size
            seconds = FIXED_BUILD_S + (built.base_size + new_bytes) / 1e9 * _seconds_per_gb()
            spread = seconds / max(len(built.steps), 1)
            for text in built.steps:
                elapsed += spread
                lines.append((elapsed, text))
            names = _image_names(spec["imageNames"], login, run_id)
            for name in names:
                lines.append((elapsed, f"Successfully tagged {name}"))
            lines.append((elapsed, f"Successfully executed container: {step}"))
            for name in names if spec["push"] else []:
                ref = images.parse_reference(name)
                lines.append((elapsed, f"Pushing image: {name}, attempt 1"))
                lines.append(
                    (
                        elapsed,
                        f"{ref.tag}: digest: {built.record['digest']} size: {len(built.record['manifest'])}",
                    )
                )
                lines.append((elapsed, f"Successfully pushed image: {name}"))
                outputs.append(
                    {
                        "registry": login,
                        "repository": ref.repository,
                        "tag": ref.tag,
                        "digest": built.record["digest"],
                        "record": built.record,
                    }
                )
            lines.append(
                (
                    elapsed,
                    f"Step ID: {step} marked as successful (elapsed time in seconds: {elapsed:.6f})",
                )
            )
        status = "Succeeded"
        lines.append((elapsed, f"Run ID: {run_id} was successful after {max(int(elapsed), 1)}s"))
    except build.BuildFailed as err:
        status, error = "Failed", str(err)
        elapsed += FIXED_BUILD_S
        lines.append((elapsed, error))
        lines.append(
            (elapsed, f"Run ID: {run_id} failed after {max(int(elapsed), 1)}s. Error: {error}")
        )
    return {
        "registry_id": registry["id"],
        "run_id": run_id,
        "created": now,
        "start": now + QUEUE_S,
        "finish": now + elapsed,
        "final_status": status,
        "error": error,
        "outputs": outputs,
        "lines": lines,
        "platform": {"os": "linux", "architecture": platform.get("architecture") or "amd64"},
        "agent": body.get("agentConfiguration") or {"cpu": 2},
        "archive": bool(body.get("isArchiveEnabled")),
        "done": False,
        "canceled": False,
    }


def _advance(ctx: Context, run: dict[str, Any], now: float) -> dict[str, Any]:
    """Move a run to its final status once its time has come (pushing its images)."""
    if run["done"] or now < run["finish"]:
        return run
    if run["final_status"] == "Succeeded":
        for output in run["outputs"]:
            images.put_image(
                ctx, run["registry_id"], output["repository"], output["record"], output["tag"]
            )
    run["done"] = True
    ctx.store.put(RUN_KIND, _key(run["registry_id"], run["run_id"]), run)
    return run


def status_of(run: dict[str, Any], now: float) -> str:
    if run["canceled"]:
        return "Canceled"
    if run["done"]:
        return run["final_status"]
    return "Queued" if now < run["start"] else "Running"


def run_wire(run: dict[str, Any], now: float) -> dict[str, Any]:
    status = status_of(run, now)
    final = status in ("Succeeded", "Failed", "Canceled")
    registry_name = run["registry_id"].rsplit("/", 1)[-1]
    return {
        "id": f"{run['registry_id']}/runs/{run['run_id']}",
        "name": run["run_id"],
        "type": f"{REGISTRY_TYPE}/runs",
        "properties": {
            "runId": run["run_id"],
            "status": status,
            "lastUpdatedTime": _iso(min(now, run["finish"]) if final else now),
            "runType": "QuickRun",
            "createTime": _iso(run["created"]),
            "startTime": _iso(run["start"]) if now >= run["start"] else None,
            "finishTime": _iso(run["finish"]) if final else None,
            "outputImages": [
                {k: o[k] for k in ("registry", "repository", "tag", "digest")}
                for o in run["outputs"]
            ]
            if status == "Succeeded"
            else [],
            "platform": run["platform"],
            "agentConfiguration": run["agent"],
            "runErrorMessage": run["error"] if status == "Failed" else None,
            "isArchiveEnabled": run["archive"],
            "provisioningState": "Succeeded",
            "task": None,
            "registryName": registry_name,
        },
    }


def log_text(run: dict[str, Any], now: float) -> str:
    elapsed = now - run["created"]
    if run["done"] or run["canceled"]:
        elapsed = float("inf")
    return "".join(
        f"{_stamp(run['created'] + offset)} {text}\n"
        for offset, text in run["lines"]
        if offset <= elapsed
    )


# -- routes ---------------------------------------------------------------------------------------


def register(router: Router, ctx: Context) -> None:
    signer = LogSigner(ctx.settings.state_dir / "acr-tasks-signing-key")

    def registry_or_404(rg: str, name: str) -> dict[str, Any]:
        rid = provider_id(ctx, rg, NAMESPACE, "registries", name)
        return resource_or_404(ctx, rid, REGISTRY_TYPE, name, rg)

    def run_or_404(registry: dict[str, Any], run_id: str) -> dict[str, Any]:
        run = ctx.store.get(RUN_KIND, _key(registry["id"], run_id))
        if run is None:
            raise not_found(
                "ResourceNotFound",
                f"The run '{run_id}' was not found in registry '{registry['name']}'.",
            )
        return _advance(ctx, run, ctx.clock())

    def signed(path: str) -> str:
        expiry = int(time.time()) + URL_LIFETIME_S
        return f"{ctx.endpoint}{path}?se={expiry}&sp=rcw&sr=b&sv=2019-02-02&sig={signer.signature(path, expiry)}"

    def registry_segment(registry: dict[str, Any]) -> str:
        return registry["name"].lower()

    async def upload_url(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        registry = registry_or_404(rg, name)
        day = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M")
        relative = f"{registry_segment(registry)}/{day}/{uuid.uuid4().hex}.tar.gz"
        return json_response(
            {"uploadUrl": signed(f"{BLOB_PREFIX}/{relative}"), "relativePath": relative}
        )

    async def schedule_run(request: Request, sub: str, rg: str, name: str) -> Response:
        require_api_version(request)
        registry = registry_or_404(rg, name)
        body = await json_body(request)
        source = str(body.get("sourceLocation") or "")
        if source and not source.startswith(registry_segment(registry) + "/"):
            raise bad_request(
                "InvalidSourceLocation",
                f"The source location '{source}' was not uploaded for registry '{registry['name']}'.",
            )
        with ctx.store.transaction():
            counter = ctx.store.get(COUNTER_KIND, registry["id"].lower()) or {"next": 1}
            run_id = f"ca{counter['next']:x}"
            ctx.store.put(COUNTER_KIND, registry["id"].lower(), {"next": counter["next"] + 1})
        now = ctx.clock()
        run = _plan(ctx, registry, run_id, body, now)
        ctx.store.put(RUN_KIND, _key(registry["id"], run_id), run)
        return json_response(run_wire(run, now))

    async def list_runs(request: Request, sub: str, rg: str, name: str) -> Response:
        registry = registry_or_404(rg, name)
        now = ctx.clock()
        runs = [
            _advance(ctx, r, now) for r in ctx.store.values(RUN_KIND, registry["id"].lower() + "|")
        ]
        runs.sort(key=lambda r: r["created"], reverse=True)
        top = request.query_params.get("$top")
        if top and top.isdigit():
            runs = runs[: int(top)]
        return json_response(list_page([run_wire(r, now) for r in runs]))

    async def get_run(request: Request, sub: str, rg: str, name: str, run_id: str) -> Response:
        run = run_or_404(registry_or_404(rg, name), run_id)
        return json_response(run_wire(run, ctx.clock()))

    async def cancel_run(request: Request, sub: str, rg: str, name: str, run_id: str) -> Response:
        registry = registry_or_404(rg, name)
        run = run_or_404(registry, run_id)
        if not run["done"] and not run["canceled"]:
            run.update(canceled=True, finish=ctx.clock(), done=True, outputs=[])
            run["lines"].append((ctx.clock() - run["created"], f"Run ID: {run_id} was canceled"))
            ctx.store.put(RUN_KIND, _key(registry["id"], run_id), run)
        return json_response({}, 200)

    async def log_url(request: Request, sub: str, rg: str, name: str, run_id: str) -> Response:
        registry = registry_or_404(rg, name)
        run = run_or_404(registry, run_id)
        link = signed(
            f"{BLOB_PREFIX}/{registry_segment(registry)}/logs/{run['run_id']}/rawtext.log"
        )
        return json_response({"logLink": link, "logArtifactLink": None})

    def check_signature(request: Request, path: str) -> Response | None:
        params = request.query_params
        if signer.valid(path, params.get("se", ""), params.get("sig", "")):
            return None
        return blob_error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization "
            "header is formed correctly including the signature.",
        )

    async def put_source(request: Request, registry_name: str, stamp: str, blob: str) -> Response:
        path = f"{BLOB_PREFIX}/{registry_name}/{stamp}/{blob}"
        refused = check_signature(request, path)
        if refused is not None:
            return refused
        if request.headers.get("x-ms-blob-type", "BlockBlob") != "BlockBlob":
            return blob_error(400, "InvalidBlobType", "Only block blobs are accepted here.")
        data = await request.body()
        target = uploads_dir(ctx) / registry_name / stamp / blob
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        headers = {
            "ETag": f'"0x{uuid.uuid4().hex[:16].upper()}"',
            "Last-Modified": dt.datetime.now(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "x-ms-request-server-encrypted": "true",
            "x-ms-version": request.headers.get("x-ms-version", "2021-08-06"),
        }
        return Response(b"", status_code=201, headers=headers)

    async def get_log(request: Request, registry_name: str, run_id: str) -> Response:
        path = f"{BLOB_PREFIX}/{registry_name}/logs/{run_id}/rawtext.log"
        refused = check_signature(request, path)
        if refused is not None:
            return refused
        registry = images.find_registry(ctx, registry_name)
        run = ctx.store.get(RUN_KIND, _key(registry["id"], run_id)) if registry else None
        if run is None:
            return blob_error(404, "BlobNotFound", "The specified blob does not exist.")
        run = _advance(ctx, run, ctx.clock())
        target = uploads_dir(ctx) / registry_name / "logs" / f"{run_id}.log"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(log_text(run, ctx.clock()))
        response = ranged_file(request, target)
        response.headers["x-ms-meta-Complete"] = "successful" if run["done"] else ""
        return response

    rg_registry = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerRegistry/registries/{name}"
    in_group = in_resource_group(ctx)
    scope = "{parent}/providers/" + REGISTRY_TYPE + "/{name}"

    def route(method: str, path: str, handler, action: str) -> None:
        router.add(method, rg_registry + path, handler, parent=in_group, action=action, scope=scope)

    route("POST", "/listBuildSourceUploadUrl", upload_url, LIST_UPLOAD_URL)
    route("POST", "/scheduleRun", schedule_run, SCHEDULE_RUN)
    route("GET", "/runs", list_runs, RUNS_READ)
    route("GET", "/runs/{run_id}", get_run, RUNS_READ)
    route("POST", "/runs/{run_id}/cancel", cancel_run, CANCEL)
    route("POST", "/runs/{run_id}/listLogSasUrl", log_url, LOG_URL)
    router.add("PUT", BLOB_PREFIX + "/{registry_name}/{stamp}/{blob}", put_source, auth="none")
    router.add(
        "GET,HEAD", BLOB_PREFIX + "/{registry_name}/logs/{run_id}/rawtext.log", get_log, auth="none"
    )


__all__ = ["AzureError", "register"]
