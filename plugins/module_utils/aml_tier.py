# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Azure ML tier: each worker is one command job on a compute cluster.

Submission goes through azure-ai-ml's job operations; status, errors and logs come from the
run-history service (what ``ml_client.jobs.stream`` reads): one ``runs/{name}/details`` call per
poll gives the status, the error and the log URLs, and the worker's stdout is followed with
ranged reads of ``user_logs/std_log.txt`` from the offset already read, so a poll costs two
small requests whatever the log's length.

The worker script travels inside the command (a bash heredoc), so no code upload is needed.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml, vm_sizes
from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import NodeUsage
from ansible_collections.openadapt.azure_eval.plugins.module_utils.credentials import (
    credential_from_env,
    subscription_from_env,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier import JobState, JobStatus

STD_LOG = "user_logs/std_log.txt"
_HEREDOC_END = "WAA_WORKER_PY_EOF"
_JOB_NAME = re.compile(r"[^A-Za-z0-9_-]")
_STATES = {
    "notstarted": JobState.QUEUED,
    "queued": JobState.QUEUED,
    "starting": JobState.STARTING,
    "provisioning": JobState.STARTING,
    "preparing": JobState.STARTING,
    "running": JobState.RUNNING,
    "finalizing": JobState.RUNNING,
    "cancelrequested": JobState.RUNNING,
    "notresponding": JobState.RUNNING,
    "paused": JobState.RUNNING,
    "completed": JobState.COMPLETED,
    "failed": JobState.FAILED,
    "canceled": JobState.CANCELED,
}


class UnknownPrice(ValueError):
    pass


def worker_command(worker_script: str, job_key: str, task_ids: list[str]) -> str:
    """The job's command: write the worker script, then run it on the job's tasks."""
    if _HEREDOC_END in worker_script:
        raise ValueError("the worker script contains the heredoc terminator")
    args = shlex.join(["--worker-id", job_key, "--task-ids", ",".join(task_ids)])
    return (
        f"cat > waa_worker.py <<'{_HEREDOC_END}'\n{worker_script.rstrip()}\n{_HEREDOC_END}\n"
        f"python -u waa_worker.py {args}"
    )


def job_name(job_key: str) -> str:
    """AML job names take letters, digits, dashes and underscores; job keys carry the run id."""
    return _JOB_NAME.sub("-", job_key).lower()[:255]


class _NodeMeter:
    """Integrates the cluster's allocated node count over time."""

    def __init__(self, read: Callable[[], tuple[int, int]], interval: float):
        self._read = read
        self._interval = interval
        self.node_seconds = 0.0
        self.nodes = 0
        self._at: float | None = None
        self._idle_since: float | None = None

    def sample(self, now: float, *, force: bool = False) -> None:
        if self._at is not None and not force and now - self._at < self._interval:
            return
        nodes, busy = self._read()
        if self._at is not None:
            self.node_seconds += self.nodes * max(now - self._at, 0.0)
        if busy == 0 and nodes > 0:
            self._idle_since = self._idle_since if self._idle_since is not None else now
        else:
            self._idle_since = None
        self.nodes, self._at = nodes, now

    def idle_for(self, now: float) -> float:
        return now - self._idle_since if self._idle_since is not None else 0.0


@dataclass
class _LogCursor:
    url: str | None = None
    offset: int = 0
    partial: str = ""


@dataclass
class AmlTier:
    ml_client: Any
    compute: str
    environment: str
    worker_script: str
    experiment_name: str
    run_name: str
    job_environment: dict[str, str] = field(default_factory=dict)
    secret_environment: dict[str, str] = field(default_factory=dict)
    job_timeout: int = 14400
    price_per_node_hour: float = 0.0
    compute_details: dict[str, Any] = field(default_factory=dict)
    name: str = "aml"
    node_sample_interval: float = 5.0
    _cursors: dict[str, _LogCursor] = field(default_factory=dict)
    _node_meter: _NodeMeter | None = None
    _http: requests.Session = field(default_factory=requests.Session)

    @classmethod
    def from_environment(
        cls,
        env: Mapping[str, str],
        *,
        resource_group: str,
        workspace: str,
        compute: str,
        environment: str,
        experiment_name: str,
        **kwargs: Any,
    ) -> AmlTier:
        client = azure_ml.ml_client(
            credential_from_env(env),
            subscription_from_env(env),
            resource_group,
            workspace,
            env.get("AZURE_CLOUD_ENVIRONMENT"),
        )
        tier = cls(
            ml_client=client,
            compute=compute,
            environment=environment,
            experiment_name=experiment_name,
            **kwargs,
        )
        tier._load_compute()
        return tier

    def _load_compute(self) -> None:
        cluster = self.ml_client.compute.get(self.compute)
        size = (cluster.size or "").lower()
        entry = next(
            (
                s
                for s in self.ml_client.compute.list_sizes(compute_type="AmlCompute")
                if s.name.lower() == size
            ),
            None,
        )
        prices = vm_sizes.vm_prices(vm_sizes.size_entry(entry) if entry else {"name": size})
        low_priority = (cluster.tier or "").lower() in ("low_priority", "lowpriority")
        price = prices.get("low_priority" if low_priority else "dedicated")
        if price is None:
            raise ValueError(
                f"no price known for {cluster.size} ({cluster.tier}); cannot account cost"
            )
        self.price_per_node_hour = price
        self.compute_details = {
            "tier": self.name,
            "min_instances": cluster.min_instances,
            "compute": self.compute,
            "vm_size": cluster.size,
            "priority": "low_priority" if low_priority else "dedicated",
            "max_instances": cluster.max_instances,
            "idle_time_before_scale_down": cluster.idle_time_before_scale_down,
            "price_per_node_hour": price,
            "environment": self.environment,
        }

    def handle_for(self, job_key: str) -> str:
        """Jobs are named after their keys, so a job whose submit was interrupted can still be
        found and cancelled."""
        return job_name(job_key)

    def describe(self) -> dict[str, Any]:
        return dict(self.compute_details)

    def node_usage(self, now: float, *, final: bool) -> NodeUsage:
        """Node time measured from the cluster's own node count (sampled at most every
        ``node_sample_interval`` seconds); with ``final``, the nodes still up are billed until
        they scale down after ``idle_time_before_scale_down``, except the ``min_instances``
        that stay regardless of the run."""
        meter = self._meter()
        meter.sample(now, force=final)
        seconds = meter.node_seconds
        if final:
            idle = float(self.compute_details.get("idle_time_before_scale_down") or 0)
            above_min = max(meter.nodes - int(self.compute_details.get("min_instances") or 0), 0)
            seconds += above_min * max(idle - meter.idle_for(now), 0.0)
        return NodeUsage(node_seconds=seconds, nodes_held=meter.nodes)

    def _meter(self) -> _NodeMeter:
        if self._node_meter is None:
            self._node_meter = _NodeMeter(self._node_count, self.node_sample_interval)
        return self._node_meter

    def _node_count(self) -> tuple[int, int]:
        """(allocated nodes, busy nodes) as the cluster reports them."""
        rest = self.ml_client.compute._operation.get(
            self.ml_client.resource_group_name, self.ml_client.workspace_name, self.compute
        )
        aml = rest.properties.properties
        current = vm_sizes.sdk_field(aml, "current_node_count", "currentNodeCount") or 0
        states = vm_sizes.sdk_field(aml, "node_state_counts", "nodeStateCounts") or {}
        if not isinstance(states, dict):
            states = {"runningNodeCount": getattr(states, "running_node_count", 0) or 0}
        return int(current), int(states.get("runningNodeCount") or 0)

    # -- Tier ---------------------------------------------------------------------------------

    def submit(self, job_key: str, task_ids: list[str]) -> str:
        self._meter().sample(time.time())
        from azure.ai.ml import command
        from azure.core.exceptions import ResourceExistsError

        name = job_name(job_key)
        job = command(
            name=name,
            display_name=f"{self.run_name} {job_key} ({len(task_ids)} tasks)",
            experiment_name=self.experiment_name,
            command=worker_command(self.worker_script, job_key, task_ids),
            environment=self.environment,
            compute=self.compute,
            environment_variables={**self.job_environment, **self.secret_environment},
            tags={"run": self.run_name, "job_key": job_key, "tasks": str(len(task_ids))},
        )
        job.set_limits(timeout=self.job_timeout)
        # A retried submit whose first answer was lost finds the job there already.
        with contextlib.suppress(ResourceExistsError):
            self.ml_client.jobs.create_or_update(job)
        self._cursors[name] = _LogCursor()
        return name

    def status(self, handle: str) -> JobStatus:
        self._meter().sample(time.time())
        details = self._runs.get_run_details(handle)
        cursor = self._cursors.setdefault(handle, _LogCursor())
        log_files = details.log_files or {}
        if cursor.url is None and STD_LOG in log_files:
            cursor.url = log_files[STD_LOG]
        state = _STATES.get((details.status or "").lower(), JobState.RUNNING)
        code = message = None
        if state is JobState.FAILED and details.error and details.error.error:
            error = details.error.error
            inner = getattr(error, "inner_error", None)
            code = (inner.code if inner and inner.code else None) or error.code
            message = error.message
        return JobStatus(
            state=state,
            error_code=code,
            error_message=message,
            node_started_at=_timestamp(details.start_time_utc),
            node_released_at=_timestamp(details.end_time_utc) if state.terminal else None,
        )

    def read_new_lines(self, handle: str) -> list[str]:
        cursor = self._cursors.setdefault(handle, _LogCursor())
        if cursor.url is None:
            return []
        response = self._http.get(
            cursor.url, headers={"Range": f"bytes={cursor.offset}-"}, timeout=30
        )
        if response.status_code == 416 or not response.content:
            return []
        response.raise_for_status()
        body = response.content
        if response.status_code == 200:  # the server ignored the range: skip what was read
            body = body[cursor.offset :]
        cursor.offset += len(body)
        text = cursor.partial + body.decode("utf-8", errors="replace")
        lines = text.split("\n")
        cursor.partial = lines.pop()
        return [line.rstrip("\r") for line in lines]

    def cancel(self, handle: str) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self.ml_client.jobs.begin_cancel(handle)
        except HttpResponseError as err:
            if err.status_code not in (400, 404, 409):
                raise

    @property
    def _runs(self):
        # The run-history operations ml_client.jobs.stream uses (status, error, log URLs).
        return self.ml_client.jobs._runs_operations


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return value.timestamp()
    import datetime as dt

    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
