"""Batch jobs and tasks: their records (per account), validation of what clients add, and the
data plane's ``CloudJob``/``CloudTask`` shapes.

Task states: ``active`` (waiting for a node), ``preparing`` (on a node, its container image being
pulled), ``running``, ``completed``. ``executionInfo`` carries Batch's retry and requeue counts,
the exit code, ``result`` and ``failureInfo``. A task's files (``stdout.txt``, ``stderr.txt``) are
in ``<state>/batch/tasks/<account>/<job>/<task>/``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

from localazure.batch.pool_model import duration_s
from localazure.core.context import Context
from localazure.core.errors import AzureError

JOB_KIND = "batch-job"
TASK_KIND = "batch-task"
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_DURATION = "P10675199DT2H48M5.4775807S"
JOB_STATES_DONE = ("completed", "deleting")


class BatchError(AzureError):
    """The data plane's error: ``{"odata.metadata", "code", "message": {"lang", "value"},
    "values": [{"key", "value"}]}``."""

    def __init__(self, status: int, code: str, message: str, values: dict[str, str] | None = None):
        super().__init__(status, code, message)
        self.values = values or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "odata.metadata": "https://batch.core.windows.net/$metadata#Microsoft.Azure.Batch."
            "Protocol.Entities.Container.errors/@Element",
            "code": self.code,
            "message": {"lang": "en-US", "value": self.message},
        }
        if self.values:
            body["values"] = [{"key": k, "value": v} for k, v in self.values.items()]
        return body


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def etag(record: dict[str, Any]) -> str:
    return (
        '"0x' + hashlib.sha1(repr(sorted(record.items())).encode()).hexdigest()[:15].upper() + '"'
    )


def check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise BatchError(
            400,
            "InvalidPropertyValue",
            f"The {what} id {value!r} is invalid: up to 64 letters, digits, hyphens and "
            "underscores.",
            {"PropertyName": "id"},
        )
    return value


# -- jobs -----------------------------------------------------------------------------------------


def job_key(account_id: str, job_id: str) -> str:
    return f"{account_id.lower()}|{job_id.lower()}"


def get_job(ctx: Context, account_id: str, job_id: str) -> dict[str, Any]:
    job = ctx.store.get(JOB_KIND, job_key(account_id, job_id))
    if job is None:
        raise BatchError(404, "JobNotFound", "The specified job does not exist.")
    return job


def jobs_of(ctx: Context, account_id: str) -> list[dict[str, Any]]:
    return ctx.store.values(JOB_KIND, account_id.lower() + "|")


def save_job(ctx: Context, job: dict[str, Any], now: float) -> None:
    job["lastModified"] = now
    ctx.store.put(JOB_KIND, job_key(job["account_id"], job["id"]), job)


def new_job(account_id: str, body: dict[str, Any], now: float) -> dict[str, Any]:
    job_id = check_id(body.get("id"), "job")
    pool_id = (body.get("poolInfo") or {}).get("poolId")
    if not pool_id:
        raise BatchError(
            400,
            "InvalidPropertyValue",
            "poolInfo.poolId is required (the emulator has no auto pools).",
            {"PropertyName": "poolInfo"},
        )
    constraints = body.get("constraints") or {}
    return {
        "account_id": account_id,
        "id": job_id,
        "displayName": body.get("displayName"),
        "priority": body.get("priority", 0),
        "poolId": pool_id,
        "constraints": {
            "maxWallClockTime": constraints.get("maxWallClockTime") or MAX_DURATION,
            "maxTaskRetryCount": constraints.get("maxTaskRetryCount", 0),
        },
        "onAllTasksComplete": body.get("onAllTasksComplete") or "noaction",
        "onTaskFailure": body.get("onTaskFailure") or "noaction",
        "commonEnvironmentSettings": body.get("commonEnvironmentSettings") or [],
        "metadata": body.get("metadata") or [],
        "usesTaskDependencies": body.get("usesTaskDependencies", False),
        "state": "active",
        "previousState": None,
        "stateTransitionTime": now,
        "creationTime": now,
        "lastModified": now,
        "executionInfo": {
            "startTime": now,
            "endTime": None,
            "poolId": pool_id,
            "terminateReason": None,
        },
    }


def set_job_state(job: dict[str, Any], value: str, now: float) -> None:
    if job["state"] != value:
        job.update(previousState=job["state"], state=value, stateTransitionTime=now)


def job_wire(base_url: str, job: dict[str, Any]) -> dict[str, Any]:
    info = job["executionInfo"]
    body = {
        "id": job["id"],
        "displayName": job["displayName"],
        "url": f"{base_url}/jobs/{job['id']}",
        "eTag": etag(job),
        "lastModified": iso(job["lastModified"]),
        "creationTime": iso(job["creationTime"]),
        "state": job["state"],
        "stateTransitionTime": iso(job["stateTransitionTime"]),
        "priority": job["priority"],
        "usesTaskDependencies": job["usesTaskDependencies"],
        "constraints": job["constraints"],
        "poolInfo": {"poolId": job["poolId"]},
        "onAllTasksComplete": job["onAllTasksComplete"],
        "onTaskFailure": job["onTaskFailure"],
        "commonEnvironmentSettings": job["commonEnvironmentSettings"],
        "metadata": job["metadata"],
        "executionInfo": {
            "startTime": iso(info["startTime"]),
            "endTime": iso(info["endTime"]),
            "poolId": info["poolId"],
            "terminateReason": info["terminateReason"],
        },
    }
    if job["previousState"]:
        body["previousState"] = job["previousState"]
    return body


# -- tasks ----------------------------------------------------------------------------------------


def task_key(account_id: str, job_id: str, task_id: str) -> str:
    return f"{account_id.lower()}|{job_id.lower()}|{task_id.lower()}"


def get_task(ctx: Context, account_id: str, job_id: str, task_id: str) -> dict[str, Any]:
    task = ctx.store.get(TASK_KIND, task_key(account_id, job_id, task_id))
    if task is None:
        raise BatchError(404, "TaskNotFound", "The specified task does not exist.")
    return task


def tasks_of(ctx: Context, account_id: str, job_id: str | None = None) -> list[dict[str, Any]]:
    prefix = account_id.lower() + "|" + (job_id.lower() + "|" if job_id else "")
    return ctx.store.values(TASK_KIND, prefix)


def all_tasks(ctx: Context) -> list[dict[str, Any]]:
    return ctx.store.values(TASK_KIND)


def save_task(ctx: Context, task: dict[str, Any], now: float) -> None:
    task["lastModified"] = now
    ctx.store.put(TASK_KIND, task["key"], task)


def new_task(job: dict[str, Any], body: dict[str, Any], container_pool: bool, now: float) -> dict:
    task_id = check_id(body.get("id"), "task")
    if not body.get("commandLine"):
        raise BatchError(
            400, "InvalidPropertyValue", "commandLine is required.", {"PropertyName": "commandLine"}
        )
    settings = body.get("containerSettings")
    if container_pool and not (settings and settings.get("imageName")):
        raise BatchError(
            400,
            "InvalidPropertyValue",
            "The task's pool has a containerConfiguration: every task must set "
            "containerSettings.imageName.",
            {"PropertyName": "containerSettings"},
        )
    if settings and not container_pool:
        raise BatchError(
            409,
            "TaskContainerSettingsNotSupportedOnPool",
            "The task sets containerSettings but its pool has no containerConfiguration.",
        )
    constraints = body.get("constraints") or {}
    wall = constraints.get("maxWallClockTime") or job["constraints"]["maxWallClockTime"]
    duration_s(wall, MAX_DURATION, "constraints.maxWallClockTime")
    retries = constraints.get("maxTaskRetryCount", job["constraints"]["maxTaskRetryCount"])
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < -1:
        raise BatchError(
            400,
            "InvalidPropertyValue",
            "constraints.maxTaskRetryCount must be -1 (unlimited) or a whole number >= 0.",
            {"PropertyName": "maxTaskRetryCount"},
        )
    return {
        "key": task_key(job["account_id"], job["id"], task_id),
        "account_id": job["account_id"],
        "job_id": job["id"],
        "id": task_id,
        "displayName": body.get("displayName"),
        "commandLine": body["commandLine"],
        "containerSettings": settings,
        "environmentSettings": body.get("environmentSettings") or [],
        "constraints": {
            "maxWallClockTime": wall,
            "retentionTime": constraints.get("retentionTime") or "P7D",
            "maxTaskRetryCount": retries,
        },
        "exitConditions": body.get("exitConditions"),
        "userIdentity": body.get("userIdentity"),
        "requiredSlots": body.get("requiredSlots", 1),
        "state": "active",
        "previousState": None,
        "stateTransitionTime": now,
        "creationTime": now,
        "lastModified": now,
        "node_id": None,
        "pool_id": None,
        "attempt_started": None,
        "prepare_until": None,
        "pending_failure": None,
        "fault": None,
        "frozen": False,
        "kill_sent_at": None,
        "terminate_reason": None,
        "executionInfo": {
            "startTime": None,
            "endTime": None,
            "exitCode": None,
            "failureInfo": None,
            "retryCount": 0,
            "lastRetryTime": None,
            "requeueCount": 0,
            "lastRequeueTime": None,
            "result": None,
        },
    }


def set_task_state(task: dict[str, Any], value: str, now: float) -> None:
    if task["state"] != value:
        task.update(previousState=task["state"], state=value, stateTransitionTime=now)


def task_dir(ctx: Context, task: dict[str, Any]) -> Path:
    account = task["account_id"].rsplit("/", 1)[-1]
    return ctx.settings.state_dir / "batch" / "tasks" / account / task["job_id"] / task["id"]


def remove_files(ctx: Context, task: dict[str, Any]) -> None:
    shutil.rmtree(task_dir(ctx, task), ignore_errors=True)


def task_wire(base_url: str, task: dict[str, Any], node: dict[str, Any] | None) -> dict[str, Any]:
    info = task["executionInfo"]
    execution = {
        "startTime": iso(info["startTime"]),
        "endTime": iso(info["endTime"]),
        "exitCode": info["exitCode"],
        "failureInfo": info["failureInfo"],
        "retryCount": info["retryCount"],
        "lastRetryTime": iso(info["lastRetryTime"]),
        "requeueCount": info["requeueCount"],
        "lastRequeueTime": iso(info["lastRequeueTime"]),
        "result": info["result"],
    }
    if task["containerSettings"] and info["startTime"] is not None:
        execution["containerInfo"] = {
            "containerId": hashlib.sha256(task["key"].encode()).hexdigest()[:64],
            "state": "exited" if task["state"] == "completed" else "running",
            "error": None,
        }
    url = f"{base_url}/jobs/{task['job_id']}/tasks/{task['id']}"
    body = {
        "id": task["id"],
        "displayName": task["displayName"],
        "url": url,
        "eTag": etag(task),
        "creationTime": iso(task["creationTime"]),
        "lastModified": iso(task["lastModified"]),
        "state": task["state"],
        "stateTransitionTime": iso(task["stateTransitionTime"]),
        "commandLine": task["commandLine"],
        "containerSettings": task["containerSettings"],
        "environmentSettings": task["environmentSettings"],
        "constraints": task["constraints"],
        "exitConditions": task["exitConditions"],
        "requiredSlots": task["requiredSlots"],
        "executionInfo": execution,
        "userIdentity": task["userIdentity"]
        or {"autoUser": {"scope": "pool", "elevationLevel": "nonadmin"}},
    }
    if task["previousState"]:
        body["previousState"] = task["previousState"]
        body["previousStateTransitionTime"] = iso(task["stateTransitionTime"])
    if node is not None:
        body["nodeInfo"] = {
            "affinityId": f"TVM:{node['id']}",
            "nodeUrl": f"{base_url}/pools/{task['pool_id']}/nodes/{node['id']}",
            "poolId": task["pool_id"],
            "nodeId": node["id"],
            "taskRootDirectory": f"workitems/{task['job_id']}/job-1/{task['id']}",
            "taskRootDirectoryUrl": f"{base_url}/pools/{task['pool_id']}/nodes/{node['id']}/"
            f"files/workitems/{task['job_id']}/job-1/{task['id']}",
        }
    return body
