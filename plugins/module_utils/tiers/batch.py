# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Azure Batch tier: one Batch job per run on an existing pool, one task per worker job.

Through azure-batch's ``BatchServiceClient`` (Entra token for the Batch audience, or the
account's Shared Key): a task's container is the registry image of the pool's
``containerConfiguration`` (``containerSettings.imageName``), its command line a bash heredoc of
the worker script, its constraints the job timeout and no Batch retries (the engine retries).
stdout is read with ranged reads of the task's ``stdout.txt`` from the offset already read.
Cancel is terminate. Failures come from Batch's own codes: the task's ``failureInfo`` (with the
tail of the task's output for ``FailureExitCode``, so the WAA image's KVM message is seen), a
task put back in the queue because its node was preempted or became unusable (the tier ends it,
the engine retries it), a pool that cannot run anything (every node failed its start task or is
unusable, or a resize that stopped at zero nodes on quota). Cost: the pool's node count
sampled over time (``NodeMeter``), priced per node hour.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from ansible_collections.openadapt.azure_eval.plugins.module_utils import vm_sizes
from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import (
    NodeInterval,
    NodeUsage,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.credentials import (
    MissingCredentials,
    credential_from_env,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    AUTHENTICATION_FAILED,
    IMAGE_PULL_DENIED,
    INVALID_CONFIGURATION,
    JOB_CANCELED,
    NODE_PREEMPTED,
    QUOTA_EXCEEDED,
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
    NodeMeter,
    UnknownPrice,
    worker_command,
    worker_environment,
)

BATCH_SCOPE = "https://batch.core.windows.net/.default"
LOW_PRIORITY_DISCOUNT = 0.2
_ID = re.compile(r"[^A-Za-z0-9_-]")
_STATES = {
    "active": JobState.QUEUED,
    "preparing": JobState.STARTING,
    "running": JobState.RUNNING,
}
OUTPUT_TAIL_LINES = 8
# Node states that can run nothing until someone acts.
_BROKEN_NODES = ("starttaskfailed", "unusable")

# Batch's codes (lowercase) and what they mean.
FAILURE_CODES: dict[str, str] = {
    "nodeunusable": SERVER_ERROR,
    "nodelost": SERVER_ERROR,
    "nodepreempted": NODE_PREEMPTED,
    "taskended": JOB_CANCELED,
    "maxwallclocktimeexceeded": WORKER_CRASH,
    "containerpullimagefailed": IMAGE_PULL_DENIED,
    "starttaskfailed": INVALID_CONFIGURATION,
    "accountcorequotareached": QUOTA_EXCEEDED,
    "accountlowprioritycorequotareached": QUOTA_EXCEEDED,
    "authenticationfailed": AUTHENTICATION_FAILED,
}


_READER_FIX = (
    " [fix: grant the pool's user-assigned identity Storage Blob Data Reader on the container "
    "(role openadapt.azure_eval.waa_image, tasks_from readers, as playbooks/batch.yml does)]"
)
_UPLOAD_FIX = " [fix: upload the golden image first (playbooks/waa_image.yml)]"
# Batch's codes for a start task's resource files it could not get, and what to do.
_RESOURCE_FILE_FIXES = {
    "resourcecontaineraccessdenied": _READER_FIX,
    "blobaccessdenied": _READER_FIX,
    "resourcecontainerlistmiscerror": " [fix: the resource file's identityReference must name "
    "one of the pool's user-assigned identities]",
    "resourcecontainernotfound": _UPLOAD_FIX,
    "blobnotfound": _UPLOAD_FIX,
}


class BatchSetupError(RuntimeError):
    """The pool or the account cannot be used as configured; the message says what to fix."""


def batch_id(text: str) -> str:
    """Batch job and task ids: letters, digits, hyphens and underscores, at most 64."""
    clean = _ID.sub("-", text)
    if len(clean) <= 64:
        return clean
    return f"{clean[:51]}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


class EntraTokenAuth:
    """msrest authentication for azure-batch from an azure-identity credential (Batch's
    audience): a fresh bearer token on every session azure-batch signs."""

    def __init__(self, credential: Any, scope: str = BATCH_SCOPE):
        self._credential = credential
        self._scope = scope

    def signed_session(self, session=None):
        import requests

        session = session or requests.Session()
        token = self._credential.get_token(self._scope).token
        session.headers["Authorization"] = f"Bearer {token}"
        return session


@dataclass
class _Followed:
    offset: int = 0
    partial: str = ""
    tail: list[str] = field(default_factory=list)
    node_id: str | None = None
    started: bool = False
    requeues: int = 0
    failure: JobStatus | None = None


@dataclass
class BatchTier(BaseTier):
    client: Any
    pool_id: str
    image: str
    worker_script: str
    run_name: str
    job_environment: dict[str, str] = field(default_factory=dict)
    secret_environment: dict[str, str] = field(default_factory=dict)
    job_timeout: int = 14400
    container_run_options: str = ""
    # Where the pool's start task put WAA's golden image, relative to its working directory
    # ($AZ_BATCH_NODE_STARTUP_DIR/wd); empty: no golden image, the worker skips WAA's VM boot.
    golden_image_dir: str = ""
    price_per_node_hour: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    name: str = "batch"
    node_sample_interval: float = 5.0
    pool_check_interval: float = 10.0
    # Batch queues tasks for the pool's nodes: the engine may keep tasks queued ahead.
    queues_jobs: ClassVar[bool] = True
    failure_codes: ClassVar[Mapping[str, str]] = FAILURE_CODES
    _follow: dict[str, _Followed] = field(default_factory=dict)
    _cancelled: set[str] = field(default_factory=set)
    _job_ready: bool = False
    _node_meter: NodeMeter | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool_checked_at: float = 0.0
    _pool_problem: tuple[str, str] | None = None

    @property
    def job_id(self) -> str:
        return batch_id(self.run_name)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_environment(cls, env: Mapping[str, str], options: Mapping[str, Any], **kwargs: Any):
        from azure.batch import BatchServiceClient

        account_key = options.get("account_key")
        if account_key:
            from azure.batch.batch_auth import SharedKeyCredentials

            auth = SharedKeyCredentials(options["account_name"], account_key)
        else:
            auth = EntraTokenAuth(credential_from_env(env))
        url = options["account_url"]
        if not url.startswith("https://"):
            url = f"https://{url}"
        client = BatchServiceClient(auth, batch_url=url)
        tier = cls(
            client=client,
            pool_id=options["pool"],
            image=options["image"],
            container_run_options=options.get("container_run_options") or "",
            golden_image_dir=_golden_image_dir(options.get("golden_image_dir") or ""),
            **kwargs,
        )
        tier._load_pool(options)
        return tier

    def _load_pool(self, options: Mapping[str, Any]) -> None:
        from azure.batch.models import BatchErrorException

        try:
            pool = self.client.pool.get(self.pool_id)
        except BatchErrorException as err:
            code = err.error.code if err.error else str(err.response.status_code)
            if code == "AuthenticationFailed":
                raise BatchSetupError(
                    f"the Batch account {options['account_url']} refused the credentials "
                    f"({code}): the shared key is wrong or was regenerated. Read the current key "
                    "(az batch account keys list) or leave account_key unset to use Entra ID. "
                    "Nothing was started."
                ) from None
            raise BatchSetupError(
                f"the Batch pool '{self.pool_id}' cannot be read ({code}: {_message(err)}); "
                "create it first (role openadapt.azure_eval.batch_pool). Nothing was started."
            ) from None
        vm = pool.virtual_machine_configuration
        security = _value(getattr(getattr(vm, "security_profile", None), "security_type", None))
        if str(security or "standard").lower() != "standard":
            raise BatchSetupError(
                f"the Batch pool '{self.pool_id}' uses security type {security}: the WAA "
                "container needs nested virtualization, which TrustedLaunch and confidential VMs "
                "do not offer. Recreate the pool with security_type Standard. Nothing was started."
            )
        containers = getattr(vm, "container_configuration", None)
        if containers is None:
            raise BatchSetupError(
                f"the Batch pool '{self.pool_id}' has no containerConfiguration; tasks of this "
                "tier run in the registry image. Nothing was started."
            )
        if self.golden_image_dir and not getattr(pool.start_task, "resource_files", None):
            raise BatchSetupError(
                f"the Batch pool '{self.pool_id}' has no start task that fetches WAA's golden "
                f"image (golden_image_dir '{self.golden_image_dir}' is relative to the start "
                "task's directory): run role openadapt.azure_eval.batch_pool after the golden "
                "image layer (playbooks/waa_image.yml), or leave golden_image_dir empty. "
                "Nothing was started."
            )
        low = (pool.target_low_priority_nodes or 0) > (pool.target_dedicated_nodes or 0)
        price = options.get("price_per_node_hour")
        if price is None:
            dedicated = vm_sizes.vm_prices({"name": pool.vm_size or ""}).get("dedicated")
            if dedicated is None:
                raise UnknownPrice(
                    f"no price known for {pool.vm_size}; set tier_options.price_per_node_hour"
                )
            price = round(dedicated * LOW_PRIORITY_DISCOUNT, 4) if low else dedicated
        self.price_per_node_hour = float(price)
        self.details = {
            "tier": self.name,
            "pool": self.pool_id,
            "vm_size": pool.vm_size,
            "target_nodes": (pool.target_dedicated_nodes or 0)
            + (pool.target_low_priority_nodes or 0),
            "priority": "low_priority" if low else "dedicated",
            "security_type": str(security or "standard").lower(),
            "image": self.image,
            "container_images": list(containers.container_image_names or []),
            "price_per_node_hour": self.price_per_node_hour,
            "job": self.job_id,
            "golden_image": self.golden_image_path or None,
        }

    @property
    def golden_image_path(self) -> str:
        """The golden image's folder as the task's shell spells it (Batch expands nothing in a
        command line; the task's bash does, and a Linux container task sees the node's Batch
        directories, the start task's included, at the same paths)."""
        if not self.golden_image_dir:
            return ""
        return '"$AZ_BATCH_NODE_STARTUP_DIR"/wd/' + shlex.quote(self.golden_image_dir)

    def describe(self) -> dict[str, Any]:
        return dict(self.details)

    def handle_for(self, job_key: str) -> str:
        return batch_id(job_key)

    # -- Tier ---------------------------------------------------------------------------------

    def _ensure_job(self) -> None:
        if self._job_ready:
            return
        from azure.batch import models

        with self._lock:
            if self._job_ready:
                return
            try:
                self.client.job.add(
                    models.JobAddParameter(
                        id=self.job_id,
                        display_name=self.run_name[:1024],
                        pool_info=models.PoolInformation(pool_id=self.pool_id),
                        common_environment_settings=[
                            models.EnvironmentSetting(name=k, value=v)
                            for k, v in sorted(
                                worker_environment(
                                    self.job_environment, bool(self.golden_image_dir)
                                ).items()
                            )
                        ],
                    )
                )
            except models.BatchErrorException as err:
                if not err.error or err.error.code != "JobExists":
                    raise
                job = self.client.job.get(self.job_id)
                if _value(job.state) in ("completed", "terminating", "deleting"):
                    raise BatchSetupError(
                        f"the Batch job '{self.job_id}' of this run is {job.state}; delete it "
                        "(az batch job delete) or start a new run."
                    ) from None
            self._job_ready = True

    def submit(self, job_key: str, task_ids: list[str]) -> str:
        from azure.batch import models

        self._sample_nodes()
        self._ensure_job()
        handle = batch_id(job_key)
        command = "/bin/bash -c " + shlex.quote(
            worker_command(
                self.worker_script,
                job_key,
                task_ids,
                shell_words=("--golden-image-path", self.golden_image_path)
                if self.golden_image_dir
                else (),
            )
        )
        task = models.TaskAddParameter(
            id=handle,
            display_name=f"{job_key} ({len(task_ids)} tasks)"[:1024],
            command_line=command,
            container_settings=models.TaskContainerSettings(
                image_name=self.image, container_run_options=self.container_run_options or None
            ),
            environment_settings=[
                models.EnvironmentSetting(name=k, value=v)
                for k, v in sorted(self.secret_environment.items())
            ],
            constraints=models.TaskConstraints(
                max_wall_clock_time=_timedelta(self.job_timeout), max_task_retry_count=0
            ),
        )
        try:
            self.client.task.add(self.job_id, task)
        except models.BatchErrorException as err:
            # A retried submit whose first answer was lost finds the task there already.
            if not err.error or err.error.code != "TaskExists":
                raise
        self._follow.setdefault(handle, _Followed())
        return handle

    def status(self, handle: str) -> JobStatus:
        from azure.batch.models import BatchErrorException

        self._sample_nodes()
        followed = self._follow.setdefault(handle, _Followed())
        if followed.failure is not None:
            return followed.failure
        try:
            task = self.client.task.get(self.job_id, handle)
        except BatchErrorException as err:
            if err.response is not None and err.response.status_code == 404:
                return JobStatus(JobState.FAILED, "TaskNotFound", f"task {handle} is gone")
            raise
        info = task.execution_info
        start = _ts(getattr(info, "start_time", None))
        task_state = _value(task.state)
        if task_state == "completed":
            return self._completed(handle, task, followed)
        # Batch requeues a task whose node was lost, and may have started it again elsewhere
        # before this poll: its requeue count says so.
        requeues = getattr(info, "requeue_count", 0) or 0
        if requeues > followed.requeues and (followed.started or task_state == "active"):
            return self._requeued(handle, followed, start)
        followed.requeues = requeues
        # The node of this attempt (after a requeue, the task may already be on another).
        if task.node_info is not None and task.node_info.node_id:
            followed.node_id = task.node_info.node_id
        if task_state in ("preparing", "running"):
            followed.started = True
        state = _STATES.get(task_state, JobState.QUEUED)
        if state is JobState.QUEUED:
            problem = self._pool_problem_now()
            if problem is not None:
                code, message = problem
                self.cancel(handle)
                followed.failure = JobStatus(JobState.FAILED, code, message)
                return followed.failure
        return JobStatus(
            state=state,
            node_started_at=start,
            running_at=start if state is JobState.RUNNING else None,
        )

    def _completed(self, handle: str, task: Any, followed: _Followed) -> JobStatus:
        info = task.execution_info
        start, end = _ts(info.start_time), _ts(info.end_time)
        failure = info.failure_info
        if _value(info.result) == "success" and failure is None:
            return JobStatus(JobState.COMPLETED, node_started_at=start, node_released_at=end)
        code = failure.code if failure else "FailureExitCode"
        if handle in self._cancelled or code == "TaskEnded":
            return JobStatus(JobState.CANCELED, code, _failure_text(failure), start, end)
        if failure is not None and _value(failure.category) == "serverError":
            code = "ServerError"
        message = _failure_text(failure)
        if info.exit_code is not None:
            message += f" (exit code {info.exit_code})"
        if followed.tail:
            message += ". Last output: " + " | ".join(followed.tail[-OUTPUT_TAIL_LINES:])
        return JobStatus(JobState.FAILED, code, message, start, end)

    def _requeued(self, handle: str, followed: _Followed, start: float | None) -> JobStatus:
        """Batch put the task back in the queue because its node went: end it and say why, so
        that the engine retries its tasks (and counts the retry) instead of Batch re-running
        the worker behind the engine's back."""
        code, message = "NodeLost", "the task's node was removed from the pool"
        node = self._lost_node(handle, followed.node_id)
        if node is not None and _value(node.state) == "preempted":
            code, message = "NodePreempted", f"node {node.id} was preempted (low priority)"
        elif node is not None and _value(node.state) == "unusable":
            errors = "; ".join(f"{e.code}: {e.message}" for e in node.errors or [])
            code = "NodeUnusable"
            message = f"node {node.id} became unusable" + (f" ({errors})" if errors else "")
        self.cancel(handle)
        followed.failure = JobStatus(
            JobState.FAILED, code, message, node_started_at=start, node_released_at=time.time()
        )
        return followed.failure

    def _lost_node(self, handle: str, node_id: str | None) -> Any:
        """The node a requeued task was lost on: the one it was seen on, else a preempted or
        unusable node whose ``recentTasks`` name it (a poll may have missed it running)."""
        from azure.batch.models import BatchErrorException

        try:
            if node_id:
                return self.client.compute_node.get(self.pool_id, node_id)
            for node in self.client.compute_node.list(self.pool_id):
                recent = {(t.job_id, t.task_id) for t in node.recent_tasks or []}
                lost = _value(node.state) in ("preempted", "unusable")
                if lost and (self.job_id, handle) in recent:
                    return node
        except BatchErrorException:
            pass
        return None

    def _pool_problem_now(self) -> tuple[str, str] | None:
        """A pool that cannot run a queued task: every node broken, or none after a resize
        that quota stopped. Read at most every ``pool_check_interval`` seconds."""
        now = time.monotonic()
        if now - self._pool_checked_at < self.pool_check_interval:
            return self._pool_problem
        self._pool_checked_at = now
        pool = self.client.pool.get(self.pool_id)
        nodes = list(self.client.compute_node.list(self.pool_id))
        live = [n for n in nodes if _value(n.state) != "preempted"]
        self._pool_problem = None
        if _value(pool.allocation_state) == "steady" and not live and pool.resize_errors:
            error = pool.resize_errors[0]
            self._pool_problem = (
                error.code,
                f"the pool '{self.pool_id}' has no nodes: {error.message}",
            )
        elif live and all(_value(n.state).lower() in _BROKEN_NODES for n in live):
            details = []
            for node in live[:3]:
                info = node.start_task_info
                failure = getattr(info, "failure_info", None) if info else None
                if failure is not None:
                    details.append(
                        f"{node.id}: start task failed ({failure.code}): {_failure_text(failure)}"
                        + self._start_task_fix(str(failure.code or ""))
                    )
                for error in node.errors or []:
                    details.append(f"{node.id}: {error.code}: {error.message}")
            code = (
                "StartTaskFailed"
                if any(_value(n.state).lower() == "starttaskfailed" for n in live)
                else "NodeUnusable"
            )
            self._pool_problem = (
                code,
                f"no node of pool '{self.pool_id}' can run tasks ("
                + "; ".join(details or [_value(n.state) for n in live])
                + "); fix the pool's start task or image and recreate its nodes",
            )
        return self._pool_problem

    def _start_task_fix(self, code: str) -> str:
        fix = _RESOURCE_FILE_FIXES.get(code.lower(), "")
        if not fix and self.golden_image_dir and code == "FailureExitCode":
            # Role batch_pool's start task exits 1 when the image is not whole.
            fix = (
                " [the start task checks WAA's golden image (its stderr is the node's "
                "startup/stderr.txt): upload the image first (playbooks/waa_image.yml)]"
            )
        return fix

    def read_new_lines(self, handle: str) -> list[str]:
        from azure.batch.models import BatchErrorException, FileGetFromTaskOptions

        followed = self._follow.setdefault(handle, _Followed())
        try:
            chunks = self.client.file.get_from_task(
                self.job_id,
                handle,
                "stdout.txt",
                file_get_from_task_options=FileGetFromTaskOptions(
                    ocp_range=f"bytes={followed.offset}-"
                ),
            )
            body = b"".join(chunks)
        except BatchErrorException as err:
            if err.response is not None and err.response.status_code in (404, 409, 416):
                return []
            raise
        if not body:
            return []
        followed.offset += len(body)
        text = followed.partial + body.decode("utf-8", errors="replace")
        lines = text.split("\n")
        followed.partial = lines.pop()
        lines = [line.rstrip("\r") for line in lines]
        followed.tail = (followed.tail + [ln for ln in lines if ln.strip()])[-OUTPUT_TAIL_LINES:]
        return lines

    def cancel(self, handle: str) -> None:
        from azure.batch.models import BatchErrorException

        self._cancelled.add(handle)
        try:
            self.client.task.terminate(self.job_id, handle)
        except BatchErrorException as err:
            status = err.response.status_code if err.response is not None else None
            if status not in (400, 404, 409):
                raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # -- cost -----------------------------------------------------------------------------------

    def node_usage(self, now: float, *, final: bool) -> NodeUsage:
        """Node time measured from the pool's own node count; the pool holds its nodes until
        the playbook scales it to zero after the run, so nothing is still to come."""
        meter = self._meter()
        meter.sample(now, force=final)
        return NodeUsage(node_seconds=meter.node_seconds, nodes_held=meter.nodes, still_to_come=0.0)

    def unobserved_node_seconds(
        self, start: float, end: float, nodes_at_start: int, jobs: list[NodeInterval]
    ) -> float:
        """A Batch pool keeps its target nodes while nobody watches: all of them the whole time."""
        return max(end - start, 0.0) * nodes_at_start

    # -- scale to zero (scale_down.py) ----------------------------------------------------------

    def nodes_left(self) -> int:
        """Nodes the pool holds now (dedicated and low priority)."""
        return self._node_count()[0]

    def release_nodes(self) -> None:
        """The pool resized to zero nodes after the run (playbooks/batch.yml does the same)."""
        from azure.batch.models import PoolResizeParameter

        self.client.pool.resize(
            self.pool_id,
            PoolResizeParameter(target_dedicated_nodes=0, target_low_priority_nodes=0),
        )

    def _meter(self) -> NodeMeter:
        if self._node_meter is None:
            self._node_meter = NodeMeter(self._node_count, self.node_sample_interval)
        return self._node_meter

    def _sample_nodes(self) -> None:
        self._meter().sample(time.time())

    def _node_count(self) -> tuple[int, int]:
        pool = self.client.pool.get(self.pool_id)
        nodes = (pool.current_dedicated_nodes or 0) + (pool.current_low_priority_nodes or 0)
        if not nodes:
            return 0, 0
        nodes_list = self.client.compute_node.list(self.pool_id)
        busy = sum(1 for n in nodes_list if _value(n.state) == "running")
        return nodes, busy


def _golden_image_dir(value: str) -> str:
    path = PurePosixPath(value)
    if value and (path.is_absolute() or ".." in path.parts):
        raise BatchSetupError(
            f"golden_image_dir '{value}' must be a path relative to the start task's working "
            "directory ($AZ_BATCH_NODE_STARTUP_DIR/wd), without '..'. Nothing was started."
        )
    return str(path) if value else ""


def _value(member: Any) -> Any:
    """azure-batch's enums are ``str`` mixins whose ``str()`` and hash are not their value."""
    return getattr(member, "value", member)


def _message(err: Any) -> str:
    message = getattr(getattr(err, "error", None), "message", None)
    return getattr(message, "value", None) or str(err)


def _failure_text(failure: Any) -> str:
    if failure is None:
        return "the task failed"
    details = "; ".join(
        f"{d.name}: {d.value}" for d in failure.details or [] if getattr(d, "value", None)
    )
    return f"{failure.message or failure.code}" + (f" ({details})" if details else "")


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def _timedelta(seconds: int):
    import datetime as dt

    return dt.timedelta(seconds=seconds)


ARGUMENT_SPEC = dict(
    account_name=dict(type="str", required=True),
    account_url=dict(type="str", required=True),
    pool=dict(type="str", required=True),
    image=dict(type="str", required=True),
    account_key=dict(type="str", no_log=True),
    container_run_options=dict(type="str", default="--device=/dev/kvm --cap-add NET_ADMIN"),
    golden_image_dir=dict(type="str", default=""),
    price_per_node_hour=dict(type="float"),
)


def build(context: TierContext) -> BatchTier:
    return BatchTier.from_environment(
        context.environment,
        context.options,
        worker_script=context.worker_script,
        job_environment=dict(context.job_environment),
        secret_environment=dict(context.secret_environment),
        job_timeout=context.job_timeout,
        run_name=context.run_name,
    )


def fingerprint(options: Mapping[str, Any]) -> dict[str, Any]:
    """The account, pool and image make the run; credentials and prices do not."""
    return {k: options.get(k) for k in ("account_url", "pool", "image")}


TIER = TierSpec(
    name="batch",
    argument_spec=ARGUMENT_SPEC,
    build=build,
    fingerprint=fingerprint,
    setup_errors=(MissingCredentials, UnknownPrice, BatchSetupError),
)
