# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Azure ML tier: each worker is one command job on a compute cluster.

Submission goes through azure-ai-ml's job operations; status, errors and logs come from the
run-history service (what ``ml_client.jobs.stream`` reads): a ``runs/{name}/details`` call
gives the status, the error and the log URLs, and the worker's stdout is followed with ranged
reads of ``user_logs/std_log.txt`` from the offset already read, so a read costs one small
request whatever the log's length. While the log flows the worker is plainly running, so run
history is read only until the log exists, once the log goes quiet or the worker printed its
``finished`` event, and otherwise every ``history_interval`` seconds.

The worker script travels inside the command (a bash heredoc), so no code upload is needed.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

try:
    import requests

    REQUESTS_IMPORT_ERROR = None
except ImportError:
    # reported by eval_run with missing_required_lib("requests")
    REQUESTS_IMPORT_ERROR = traceback.format_exc()

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml, vm_sizes
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.metrics import (
    MetricsSource,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import (
    NodeInterval,
    NodeUsage,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.credentials import (
    MissingCredentials,
    credential_from_env,
    subscription_from_env,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    AUTHORIZATION_FAILED,
    IMAGE_NOT_FOUND,
    INVALID_CONFIGURATION,
    NESTED_VIRTUALIZATION_UNAVAILABLE,
    SERVER_ERROR,
    WORKER_CRASH,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    BaseTier,
    JobState,
    JobStatus,
    TierContext,
    TierSpec,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.common import (
    TASK_FEED_ENV,
    InvalidOption,
    MissingRequirement,
    NodeMeter,
    RangedLog,
    UnknownPrice,
    check_container_url,
    feed_entry,
    worker_command,
)

STD_LOG = "user_logs/std_log.txt"


def _http_session() -> requests.Session:
    return requests.Session()


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


# Run-history inner error codes (lowercase) and what they mean; the category codes
# (UserError, SystemError) say only "it failed" and are left to the generic classifier.
FAILURE_CODES: dict[str, str] = {
    "imagepulltransienterror": SERVER_ERROR,
    "registrynotfound": IMAGE_NOT_FOUND,
    "userprocessfailed": WORKER_CRASH,
    "jobtimeout": WORKER_CRASH,
    "nodelost": SERVER_ERROR,
    "computedeleted": INVALID_CONFIGURATION,
    "kvmunavailable": NESTED_VIRTUALIZATION_UNAVAILABLE,
    # A job input (the golden image) the compute's identity may not read, or that is not there.
    "dataaccessauthorizationfailure": AUTHORIZATION_FAILED,
    "datastorenotfound": INVALID_CONFIGURATION,
}


def job_name(job_key: str) -> str:
    """AML job names take letters, digits, dashes and underscores; job keys carry the run id."""
    return _JOB_NAME.sub("-", job_key).lower()[:255]


@dataclass
class AmlTier(BaseTier):
    ml_client: Any
    compute: str
    environment: str
    worker_script: str
    experiment_name: str
    run_name: str
    # WAA's golden image on a datastore (azureml://datastores/<name>/paths/<path>), mounted
    # read-only into every job as input ``golden_image``; empty: the worker looks at /storage.
    golden_image: str = ""
    # A blob container (https://<account>.blob.core.windows.net/<container>) for the jobs' task
    # feeds: the engine writes a running job's next tasks to ``<job name>/<seq>.json`` there
    # (the controller's identity: Storage Blob Data Contributor) and the worker reads them with
    # the compute's managed identity (Storage Blob Data Reader). Empty: a job per chunk.
    task_feed: str = ""
    job_environment: dict[str, str] = field(default_factory=dict)
    secret_environment: dict[str, str] = field(default_factory=dict)
    job_timeout: int = 14400
    price_per_node_hour: float = 0.0
    compute_details: dict[str, Any] = field(default_factory=dict)
    name: str = "aml"
    node_sample_interval: float = 5.0
    # Run-history reads of a job whose log is flowing: every this many seconds.
    history_interval: float = 30.0
    # A log that brought nothing new for this long since it was last looked at (a log read
    # with new bytes, or a run-history read) is quiet: run history is read, so a preempted or
    # failed job is seen this long after its log stopped (0: at every poll). The engine asks
    # for a fresh read before it judges a job stuck (``expire_status``).
    quiet_after: float = 5.0
    # AML queues jobs for the cluster's nodes, so the engine may keep jobs queued ahead.
    queues_jobs: ClassVar[bool] = True
    failure_codes: ClassVar[Mapping[str, str]] = FAILURE_CODES
    _cursors: dict[str, RangedLog] = field(default_factory=dict)
    _follow: dict[str, _Followed] = field(default_factory=dict)
    _node_meter: NodeMeter | None = None
    _meter_lock: threading.Lock = field(default_factory=threading.Lock)
    _http: requests.Session = field(default_factory=_http_session)
    _feed_client: Any = None

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
            raise UnknownPrice(
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
            "dedicated_price_per_node_hour": prices.get("dedicated"),
            "environment": self.environment,
        }

    @property
    def feeds_tasks(self) -> bool:
        return bool(self.task_feed)

    def offer(self, handle: str, seq: int, task_ids: list[str]) -> None:
        """Write entry ``seq`` of the job's task feed (``FeedsTasks``)."""
        if self._feed_client is None:
            from azure.storage.blob import ContainerClient

            self._feed_client = ContainerClient.from_container_url(
                self.task_feed, credential=self.ml_client._credential
            )
        self._feed_client.upload_blob(f"{handle}/{seq}.json", feed_entry(task_ids), overwrite=True)

    def handle_for(self, job_key: str) -> str:
        """Jobs are named after their keys, so a job whose submit was interrupted can still be
        found and cancelled."""
        return job_name(job_key)

    def describe(self) -> dict[str, Any]:
        return dict(self.compute_details)

    def metrics_source(self) -> MetricsSource:
        """The cluster's node figures: Azure ML publishes them on the workspace, split by
        node (``InstanceId``) and job (``RunId``, the job's name: this tier's handle)."""
        client = self.ml_client

        def monitor_client() -> Any:
            from azure.mgmt.monitor import MonitorManagementClient

            return MonitorManagementClient(
                client._credential,
                client.subscription_id,
                base_url=azure_ml.arm_endpoint(client),
                credential_scopes=[azure_ml.arm_endpoint(client).rstrip("/") + "/.default"],
            )

        return MetricsSource(
            client_factory=monitor_client,
            resource_id=azure_ml.workspace_id(client),
            metric_names={
                "cpu": "CpuUtilizationPercentage",
                "memory": "CpuMemoryUtilizationPercentage",
                "disk_used": "DiskUsedMegabytes",
                "disk_available": "DiskAvailMegabytes",
            },
            filter=f"ComputeName eq '{self.compute}' and InstanceId eq '*' and RunId eq '*'",
            node_dimension="InstanceId",
            run_dimension="RunId",
        )

    def node_usage(self, now: float, *, final: bool) -> NodeUsage:
        """Node time measured from the cluster's own node count (sampled at most every
        ``node_sample_interval`` seconds); with ``final``, the nodes still up are billed until
        they scale down after ``idle_time_before_scale_down``, except the ``min_instances``
        that stay regardless of the run."""
        meter = self._meter()
        meter.sample(now, force=final)
        tail = 0.0
        if final:
            above_min = max(meter.nodes - self._min_nodes, 0)
            tail = above_min * max(self._idle_s - meter.idle_for(now), 0.0)
        return NodeUsage(
            node_seconds=meter.seconds_until(now) + tail,
            nodes_held=meter.nodes,
            still_to_come=tail,
        )

    def unobserved_node_seconds(
        self, start: float, end: float, nodes_at_start: int, jobs: list[NodeInterval]
    ) -> float:
        """The cluster's node time while no controller watched it (between ``start``, the last
        sample of an earlier session, and ``end``), from what is known: the nodes held at
        ``start``, the node intervals of the jobs that ran meanwhile (from run history), and the
        idle time before scale-down. Each node held at ``start`` stays while a job of that time
        runs on it, then idles until it scales down (the ``min_instances`` stay). A job that
        starts meanwhile takes a node that is idle and not yet scaled down, as Azure ML gives a
        queued job an idle node first (so a node that runs the jobs queued ahead one after
        another is counted once); only when none is idle does it count a node of its own."""
        running = sorted(
            (j.released_at if j.released_at is not None else end)
            for j in jobs
            if j.acquired_at <= start and (j.released_at is None or j.released_at > start)
        )[::-1]
        nodes = [
            _GapNode(start, running[i] if i < len(running) else start, stays=i < self._min_nodes)
            for i in range(max(nodes_at_start, len(running)))
        ]
        for job in sorted((j for j in jobs if start < j.acquired_at < end), key=_acquired):
            released = job.released_at if job.released_at is not None else end
            idle = [n for n in nodes if n.idle_at(job.acquired_at, self._idle_s)]
            if idle:
                # The node freed last: the others may scale down on time.
                max(idle, key=lambda n: n.free_at).free_at = max(released, job.acquired_at)
            else:
                nodes.append(_GapNode(job.acquired_at, released, stays=False))
        return sum(node.seconds(end, self._idle_s) for node in nodes)

    @property
    def _idle_s(self) -> float:
        return float(self.compute_details.get("idle_time_before_scale_down") or 0)

    @property
    def _min_nodes(self) -> int:
        return int(self.compute_details.get("min_instances") or 0)

    def _meter(self) -> NodeMeter:
        if self._node_meter is None:
            self._node_meter = NodeMeter(self._node_count, self.node_sample_interval)
        return self._node_meter

    def _sample_nodes(self) -> None:
        # Submits may run on several threads at once; one sample at a time.
        with self._meter_lock:
            self._meter().sample(time.time())

    def _node_count(self) -> tuple[int, int]:
        """(allocated nodes, busy nodes) as the cluster reports them."""
        aml = azure_ml.compute_resource(self.ml_client, self.compute).properties.properties
        current = vm_sizes.sdk_field(aml, "current_node_count", "currentNodeCount") or 0
        states = vm_sizes.sdk_field(aml, "node_state_counts", "nodeStateCounts") or {}
        if not isinstance(states, dict):
            states = {"runningNodeCount": getattr(states, "running_node_count", 0) or 0}
        return int(current), int(states.get("runningNodeCount") or 0)

    def nodes_left(self) -> int:
        """Nodes the run leaves running: busy ones, and the ``min_instances`` the cluster keeps
        whatever runs; idle nodes above that scale down by themselves after the idle time."""
        _total, busy = self._node_count()
        return busy + self._min_nodes

    # -- Tier ---------------------------------------------------------------------------------

    def submit(self, job_key: str, task_ids: list[str]) -> str:
        return self._submit(job_key, task_ids, f"{len(task_ids)} tasks")

    def submit_warm_up(self, job_key: str) -> str:
        """A job that only checks its node: the image pulled, the golden image mounted."""
        return self._submit(job_key, [], "warm-up", ["--warm-up"])

    def scale_to(self, min_nodes: int) -> int:
        """Keep at least ``min_nodes`` nodes (at most the cluster's maximum); returns the
        minimum it had, to give back afterwards (the idle scale-down then returns the rest)."""
        return azure_ml.set_min_nodes(self.ml_client, self.compute, min_nodes)

    def _submit(
        self, job_key: str, task_ids: list[str], what: str, extra_args: list[str] | None = None
    ) -> str:
        self._sample_nodes()
        from azure.ai.ml import command
        from azure.core.exceptions import ResourceExistsError

        name = job_name(job_key)
        inputs, extra_args = {}, list(extra_args or [])
        if self.golden_image:
            from azure.ai.ml import Input

            inputs["golden_image"] = Input(
                type="uri_folder", path=self.golden_image, mode="ro_mount"
            )
            extra_args += ["--golden-image-path", "${{inputs.golden_image}}"]
        job = command(
            name=name,
            display_name=f"{self.run_name} {job_key} ({what})",
            experiment_name=self.experiment_name,
            command=worker_command(self.worker_script, job_key, task_ids, extra_args),
            inputs=inputs or None,
            environment=self.environment,
            compute=self.compute,
            environment_variables={
                **self.job_environment,
                **self.secret_environment,
                **({TASK_FEED_ENV: f"{self.task_feed}/{name}"} if self.task_feed else {}),
            },
            tags={"run": self.run_name, "job_key": job_key, "tasks": str(len(task_ids))},
        )
        job.set_limits(timeout=self.job_timeout)
        # A retried submit whose first answer was lost finds the job there already.
        with contextlib.suppress(ResourceExistsError):
            self.ml_client.jobs.create_or_update(job)
        self._cursors[name] = RangedLog()
        return name

    def status(self, handle: str) -> JobStatus:
        self._sample_nodes()
        followed = self._follow.setdefault(handle, _Followed())
        now = time.monotonic()
        if followed.status is not None and not self._history_due(handle, followed, now):
            return followed.status
        details = azure_ml.run_details(self.ml_client, handle)
        followed.history_read_at = now
        cursor = self._cursors.setdefault(handle, RangedLog())
        log_files = details.log_files or {}
        if cursor.url is None and STD_LOG in log_files:
            cursor.url = log_files[STD_LOG]
        state = _STATES.get((details.status or "").lower(), JobState.RUNNING)
        code = message = None
        if state is JobState.FAILED:
            code, message = azure_ml.run_error(details)
        followed.status = JobStatus(
            state=state,
            error_code=code,
            error_message=message,
            node_started_at=_timestamp(details.start_time_utc),
            # Run history's start time is when the run started running.
            running_at=_timestamp(details.start_time_utc),
            node_released_at=_timestamp(details.end_time_utc) if state.terminal else None,
        )
        return followed.status

    def _history_due(self, handle: str, followed: _Followed, now: float) -> bool:
        """Run history is read until the log exists, when the log ends (the worker said it
        finished) or goes quiet, and at a slow cadence while it flows."""
        cursor = self._cursors.get(handle)
        if cursor is None or cursor.url is None or followed.ended:
            return True
        if now - max(followed.log_grew_at, followed.history_read_at) >= self.quiet_after:
            return True
        return now - followed.history_read_at >= self.history_interval

    def expire_status(self, handle: str) -> None:
        """The next ``status`` of this job reads run history, whatever its cadence."""
        followed = self._follow.get(handle)
        if followed is not None:
            followed.status = None

    def read_new_lines(self, handle: str) -> list[str]:
        lines = self._cursors.setdefault(handle, RangedLog()).read_new_lines(self._http)
        followed = self._follow.setdefault(handle, _Followed())
        if lines:
            followed.log_grew_at = time.monotonic()
            followed.ended = followed.ended or any(_FINISHED in line for line in lines)
        return lines

    def cancel(self, handle: str) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self.ml_client.jobs.begin_cancel(handle)
        except HttpResponseError as err:
            if err.status_code not in (400, 404, 409):
                raise

    def close(self) -> None:
        self._http.close()
        if self._feed_client is not None:
            self._feed_client.close()


# The worker's last event (worker/waa_worker.py writes compact JSON).
_FINISHED = 'WAA_EVENT {"event":"finished"'


@dataclass
class _Followed:
    """What was last read of one job: its status and when, and how its log is going."""

    status: JobStatus | None = None
    history_read_at: float = 0.0
    log_grew_at: float = field(default_factory=time.monotonic)
    ended: bool = False


@dataclass
class _GapNode:
    """A node of the cluster while no controller watched: counted from ``since``, busy until
    ``free_at``, then idle until it scales down (never, if it ``stays``: ``min_instances``)."""

    since: float
    free_at: float
    stays: bool

    def idle_at(self, at: float, idle_s: float) -> bool:
        return self.free_at <= at and (self.stays or at <= self.free_at + idle_s)

    def seconds(self, end: float, idle_s: float) -> float:
        until = end if self.stays else min(self.free_at + idle_s, end)
        return max(0.0, until - self.since)


def _acquired(interval: NodeInterval) -> float:
    return interval.acquired_at


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return value.timestamp()
    import datetime as dt

    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


ARGUMENT_SPEC = dict(
    resource_group=dict(type="str", required=True),
    workspace=dict(type="str", required=True),
    compute=dict(type="str", required=True),
    environment=dict(type="str", required=True),
    experiment_name=dict(type="str", default="waa-evaluation"),
    golden_image=dict(type="str", default=""),
    task_feed=dict(type="str", default=""),
)


def build(context: TierContext) -> AmlTier:
    if REQUESTS_IMPORT_ERROR:
        raise MissingRequirement(missing_required_lib("requests"))
    check_container_url("task_feed", context.options.get("task_feed") or "")
    return AmlTier.from_environment(
        context.environment,
        worker_script=context.worker_script,
        job_environment=dict(context.job_environment),
        secret_environment=dict(context.secret_environment),
        job_timeout=context.job_timeout,
        run_name=context.run_name,
        **context.options,
    )


def fingerprint(options: Mapping[str, Any]) -> dict[str, Any]:
    """The workspace, cluster and environment make the run; the experiment is only a folder and
    the task feed only how tasks reach the jobs."""
    return {k: v for k, v in options.items() if k not in ("experiment_name", "task_feed")}


TIER = TierSpec(
    name="aml",
    argument_spec=ARGUMENT_SPEC,
    build=build,
    fingerprint=fingerprint,
    setup_errors=(MissingCredentials, MissingRequirement, UnknownPrice, InvalidOption),
)
