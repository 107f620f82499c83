# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The VM tier: each worker is one container of the evaluation image on a VM of the pool,
started and followed over SSH (paramiko).

A job is given to a free, healthy VM (one job per VM at a time; a job waits ``QUEUED`` in this
tier until one is free): ``docker run -d`` of the registry image with the worker's command (the
worker script in a heredoc, as on Azure ML) and its environment in an env file that the command
reads from the SSH channel's stdin into a 0600 temporary file, removed when ``docker run``
returns, so no secret is ever in a command line, a process list, a log or the inventory. Its
stdout is read line by line as it comes with ``docker logs -f``; when the connection drops, the
tier connects again and reads on from the first line it has not had (the worker keeps running
in its container). A VM that cannot be reached for ``unreachable_after`` seconds, or that ARM
reports deallocated (a Spot eviction) or deleted, is marked unhealthy: its job fails with a
transient code and the engine runs its tasks on another VM. A finished container is removed
once the engine has seen its end; a cancelled one at once (``docker rm -f``).

Cost: the pool's VMs are billed while allocated (running or stopped, not deallocated), read
from their ARM instance views, from the moment each was last started (provisioning and
bootstrap included) until the run ends. After the run, however it ended, the VMs are
deallocated (``release_nodes``, and the playbook's ``always``): disks, pulled images and the
golden image stay, and the next run with tasks left starts them again.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.openadapt.azure_eval.plugins.module_utils import vm_sizes
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
    CONNECTION_ERROR,
    NODE_PREEMPTED,
    WORKER_CRASH,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ssh_hosts import (
    PARAMIKO_IMPORT_ERROR,
    SSH_ERRORS,
    SshHost,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    BaseTier,
    JobState,
    JobStatus,
    TierContext,
    TierSpec,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.common import (
    MissingRequirement,
    NodeMeter,
    UnknownPrice,
    worker_command,
    worker_environment,
)

WORKER_EXITED = "WorkerExited"
VM_UNREACHABLE = "VmUnreachable"
VM_DEALLOCATED = "VmDeallocated"
VM_DELETED = "VmDeleted"
FAILURE_CODES: dict[str, str] = {
    WORKER_EXITED.lower(): WORKER_CRASH,
    VM_UNREACHABLE.lower(): CONNECTION_ERROR,
    VM_DEALLOCATED.lower(): NODE_PREEMPTED,
    VM_DELETED.lower(): NODE_PREEMPTED,
}
# Power states in which a VM holds its hardware (and is billed).
_UNBILLED = ("deallocated", "deallocating")
# How long a cancel waits for a docker run in flight (its own timeout is 300 s).
CANCEL_WAITS_FOR_START_S = 120.0
_CONTAINER_NAME = re.compile(r"[^a-zA-Z0-9_.-]")
_VM_ID = re.compile(
    r"/resourceGroups/([^/]+)/providers/Microsoft\.Compute/virtualMachines/([^/]+)$", re.I
)
_VM_ID_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)/", re.I)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SetupError(ValueError):
    """The tier's options cannot work (no host, a bad host entry, an unusable environment)."""


def container_name(job_key: str) -> str:
    return _CONTAINER_NAME.sub("-", job_key)[:128]


def env_file(variables: Mapping[str, str]) -> bytes:
    """Docker's env-file format: one NAME=value a line (values cannot hold a newline)."""
    lines = []
    for name, value in variables.items():
        if not _ENV_NAME.match(name) or "\n" in str(value):
            raise SetupError(
                f"environment variable {name!r}: names are letters, digits and underscores, "
                "values one line"
            )
        lines.append(f"{name}={value}")
    return ("\n".join(lines) + "\n").encode()


def check_image_dir(path: str) -> str:
    """The golden image's directory on the VMs: empty (none), absolute, or under ``~/``."""
    if path and (
        not (path.startswith("/") or path == "~" or path.startswith("~/"))
        or any(c in path for c in ":,\n\0")
    ):
        raise SetupError(
            f"golden_image_dir {path!r} must be an absolute path or one under the admin's home "
            "(~/...), without ':' or ',' (it is mounted with docker run -v)"
        )
    return path


def _vm_shell_path(path: str) -> str:
    """``path`` as a word of the VM's shell: a leading ``~`` becomes the VM user's ``$HOME``
    (expanded by the VM's shell, not the container's), the rest quoted."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def run_command(name: str, image: str, worker: str, image_dir: str = "") -> str:
    """The shell command that starts a job's container on a VM; the env file comes on stdin.
    With ``image_dir``, WAA's golden image there is mounted read-only at the same path and the
    worker is told where (``WAA_GOLDEN_IMAGE_PATH``)."""
    # "$d" is the image's directory on this VM (a ~ expanded by the VM's shell).
    image_dir_word = f"d={_vm_shell_path(image_dir)}; " if image_dir else ""
    mount = '-v "$d:$d:ro" -e WAA_GOLDEN_IMAGE_PATH="$d" ' if image_dir else ""
    return (
        'set -e; umask 077; f=$(mktemp); trap \'rm -f "$f"\' EXIT; cat > "$f"; '
        f'{image_dir_word}docker run -d --name {shlex.quote(name)} --env-file "$f" {mount}'
        f"{shlex.quote(image)} bash -c {shlex.quote(worker)}"
    )


def follow_command(name: str, skip_lines: int) -> str:
    """The container's log from line ``skip_lines + 1`` on, followed until the container ends."""
    logs = f"docker logs -f {shlex.quote(name)} 2>/dev/null"
    return f"{logs} | tail -n +{skip_lines + 1}" if skip_lines else logs


@dataclass
class _Host:
    ssh: SshHost
    vm_id: str
    job: str | None = None  # the job it runs (one at a time)
    healthy: bool = True
    reason: str = ""
    retry_at: float = 0.0
    stale: set[str] = field(default_factory=set)  # containers to remove once it answers

    @property
    def name(self) -> str:
        return self.ssh.name


@dataclass
class _Job:
    key: str
    container: str
    task_ids: list[str]
    accepted_at: float
    host: _Host | None = None
    started_at: float | None = None
    lines: list[str] = field(default_factory=list)
    read_upto: int = 0
    delivered: int = 0  # complete lines of the container's log received
    ended: bool = False
    exit_code: int | None = None
    error: tuple[str, str] | None = None
    released_at: float | None = None
    cancelled: bool = False
    reaped: bool = False
    tail: str = ""  # the container's last lines with its stderr, when it failed
    # Set once no ``docker run`` of the job is in flight: a cancel waits for it, or its
    # ``docker rm -f`` could run before the container exists and leave it running.
    settled: threading.Event = field(default_factory=threading.Event)


@dataclass
class VmTier(BaseTier):
    hosts: list[_Host]
    image: str
    worker_script: str
    compute: Any  # azure.mgmt.compute.ComputeManagementClient
    pool: str = ""
    job_environment: dict[str, str] = field(default_factory=dict)
    # WAA's golden image on each VM's disk (the vm_pool bootstrap copied it there): absolute or
    # under ~/; empty: none, and the workers skip WAA's VM boot.
    golden_image_dir: str = ""
    price_per_node_hour: float = 0.0
    vm_size: str = ""
    unreachable_after: float = 60.0
    retry_unhealthy_after: float = 30.0
    reconnect_interval: float = 1.0
    node_sample_interval: float = 5.0
    # The pool's region and a factory of its azure-mgmt-monitor client: the VMs' host metrics.
    region: str = ""
    monitor_factory: Callable[[], Any] | None = None
    name: str = "vm"
    queues_jobs: ClassVar[bool] = False
    failure_codes: ClassVar[Mapping[str, str]] = FAILURE_CODES
    _jobs: dict[str, _Job] = field(default_factory=dict)
    _queue: list[str] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _meter: NodeMeter | None = None
    _allocated_since: dict[str, float] = field(default_factory=dict)
    _lead_in: float | None = None
    _closed: bool = False

    # -- the pool ----------------------------------------------------------------------------

    def capacity(self) -> int:
        return len(self.hosts)

    def describe(self) -> dict[str, Any]:
        return {
            "tier": self.name,
            "pool": self.pool,
            "vms": [h.name for h in self.hosts],
            "vm_size": self.vm_size,
            "image": self.image,
            "golden_image_dir": self.golden_image_dir,
            "price_per_node_hour": self.price_per_node_hour,
            "unhealthy": {h.name: h.reason for h in self.hosts if not h.healthy},
        }

    def handle_for(self, job_key: str) -> str:
        return job_key

    def metrics_source(self) -> MetricsSource | None:
        """The VMs' host metrics: one multi-resource query for the pool's region, filtered to
        its VMs and split by their resource ids (a VM has no job dimension: the tier names the
        job each VM runs)."""
        if self.monitor_factory is None:
            return None
        by_vm = {h.vm_id.lower(): h for h in self.hosts}

        def job_on(vm_id: str) -> str | None:
            host = by_vm.get(vm_id.lower())
            return host.job if host is not None else None

        return MetricsSource(
            client_factory=self.monitor_factory,
            resource_id="/subscriptions/" + _VM_ID_SUBSCRIPTION.search(self.hosts[0].vm_id)[1],
            metric_names={
                "cpu": "Percentage CPU",
                "memory_available": "Available Memory Percentage",
            },
            filter=" or ".join(f"Microsoft.ResourceId eq '{h.vm_id}'" for h in self.hosts),
            node_dimension="Microsoft.ResourceId",
            region=self.region,
            namespace="Microsoft.Compute/virtualMachines",
            run_of=job_on,
            top=max(10, len(self.hosts)),
        )

    # -- the Tier contract -------------------------------------------------------------------

    def submit(self, job_key: str, task_ids: list[str]) -> str:
        with self._lock:
            if job_key not in self._jobs:
                self._jobs[job_key] = _Job(
                    job_key, container_name(job_key), list(task_ids), time.time()
                )
                self._queue.append(job_key)
        self._dispatch()
        return job_key

    def status(self, handle: str) -> JobStatus:
        job = self._jobs.get(handle) or self._adopt(handle)
        if job.host is None and not job.ended:
            self._dispatch()
        with self._lock:
            if job.host is None and not job.ended:
                return JobStatus(JobState.QUEUED, waits_for_own_node=self._every_vm_held())
            if not job.ended:
                return JobStatus(
                    JobState.RUNNING, node_started_at=job.started_at, running_at=job.started_at
                )
        self._reap(job)
        times = dict(node_started_at=job.started_at, node_released_at=job.released_at)
        if job.cancelled:
            return JobStatus(JobState.CANCELED, None, "canceled on request", **times)
        if job.error is not None:
            return JobStatus(JobState.FAILED, job.error[0], job.error[1], **times)
        if job.exit_code == 0:
            return JobStatus(JobState.COMPLETED, **times)
        tail = job.tail.strip() or "\n".join(job.lines[-15:]).strip() or "(empty log)"
        return JobStatus(
            JobState.FAILED,
            WORKER_EXITED,
            f"worker exited with code {job.exit_code} on {job.host.name if job.host else '?'}: "
            f"{tail}",
            **times,
        )

    def read_new_lines(self, handle: str) -> list[str]:
        job = self._jobs.get(handle)
        if job is None:
            return []
        with self._lock:
            lines = job.lines[job.read_upto :]
            job.read_upto = len(job.lines)
        return lines

    def cancel(self, handle: str) -> None:
        job = self._jobs.get(handle)
        if job is None:
            return
        with self._lock:
            if job.ended:
                return
            job.cancelled = True
            host = job.host
            if host is None:
                self._queue = [k for k in self._queue if k != handle]
                job.ended, job.released_at = True, time.time()
                return
        job.settled.wait(CANCEL_WAITS_FOR_START_S)
        self._remove_container(host, job.container)
        self._remove_stale_copies(job)

    def close(self) -> None:
        self._closed = True
        for host in self.hosts:
            host.ssh.close()
        close = getattr(self.compute, "close", None)
        if close is not None:
            close()

    # -- node time ----------------------------------------------------------------------------

    def node_usage(self, now: float, *, final: bool) -> NodeUsage:
        """The pool's allocated VMs integrated over time (sampled every
        ``node_sample_interval`` seconds), plus, in the run's first session, each VM's time from
        its last start to the first sample. Nothing is still to come: the VMs are deallocated
        once the run ends."""
        meter = self._node_meter()
        first = meter.nodes == 0 and self._lead_in is None
        meter.sample(now, force=final or first)
        if self._lead_in is None:
            self._lead_in = sum(max(0.0, now - t) for t in self._allocated_since.values())
        return NodeUsage(node_seconds=meter.node_seconds + self._lead_in, nodes_held=meter.nodes)

    def unobserved_node_seconds(
        self, start: float, end: float, nodes_at_start: int, jobs: list[NodeInterval]
    ) -> float:
        """VMs do not scale down: each VM allocated now ran from ``start`` (or its last start,
        if later) to ``end``."""
        self._pool_nodes()
        self._lead_in = 0.0
        return sum(max(0.0, end - max(start, t)) for t in self._allocated_since.values())

    # -- scale to zero (scale_down.py) ----------------------------------------------------------

    def nodes_left(self) -> int:
        """The pool's VMs still allocated (billed)."""
        return self._pool_nodes()[0]

    def release_nodes(self) -> None:
        """Every allocated VM of the pool deallocated after the run, all at once (the playbook
        does the same in its ``always``); a re-run with tasks left starts them again."""
        pollers = [
            self.compute.virtual_machines.begin_deallocate(*_parse_vm_id(vm_id))
            for vm_id in self._allocated()
        ]
        for poller in pollers:
            poller.result()

    def _node_meter(self) -> NodeMeter:
        if self._meter is None:
            self._meter = NodeMeter(self._pool_nodes, self.node_sample_interval)
        return self._meter

    def _pool_nodes(self) -> tuple[int, int]:
        """(allocated VMs, VMs running a job), from ARM."""
        allocated = self._allocated_since = self._allocated()
        with self._lock:
            busy = sum(1 for h in self.hosts if h.job is not None)
        return len(allocated), busy

    def _allocated(self) -> dict[str, float]:
        """The pool's VMs allocated now (billed), each with the time it was last started."""
        allocated: dict[str, float] = {}
        for host in self.hosts:
            view = self._instance_view(host)
            if view is not None and view[0] not in _UNBILLED:
                allocated[host.vm_id] = view[1] or time.time()
        return allocated

    def _instance_view(self, host: _Host) -> tuple[str, float | None] | None:
        """(power state, time of its last provisioning) or None when the VM is gone."""
        from azure.core.exceptions import ResourceNotFoundError

        group, name = _parse_vm_id(host.vm_id)
        try:
            view = self.compute.virtual_machines.instance_view(group, name)
        except ResourceNotFoundError:
            return None
        power, provisioned = "unknown", None
        for status in view.statuses or []:
            code = status.code or ""
            if code.startswith("PowerState/"):
                power = code.split("/", 1)[1]
            elif code.startswith("ProvisioningState/") and status.time is not None:
                provisioned = status.time.timestamp()
        return power, provisioned

    # -- placing jobs -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start queued jobs on free healthy VMs (one job per VM)."""
        while not self._closed:
            with self._lock:
                key = next((k for k in self._queue if not self._jobs[k].cancelled), None)
                host = self._free_host()
                if key is None or host is None:
                    return
                self._queue.remove(key)
                job = self._jobs[key]
                job.host, host.job = host, key
            if not self._start(job, host):
                with self._lock:
                    job.host, host.job = None, None
                    if job.cancelled:
                        job.ended, job.released_at = True, time.time()
                    else:
                        self._queue.insert(0, key)
            job.settled.set()

    def _free_host(self) -> _Host | None:
        now = time.time()
        for host in self.hosts:
            if host.job is None and host.healthy:
                return host
        for host in self.hosts:
            if host.job is None and not host.healthy and now >= host.retry_at:
                host.retry_at = now + self.retry_unhealthy_after
                if self._probe(host):
                    return host
        return None

    def _every_vm_held(self) -> bool:
        """No healthy VM is free and one at least runs (or still winds down) a job of ours: a
        queued job waits for our own VM. With every VM unhealthy it waits for none."""
        with self._lock:
            healthy = [h for h in self.hosts if h.healthy]
            return bool(healthy) and all(h.job is not None for h in healthy)

    def _probe(self, host: _Host) -> bool:
        """Whether an unhealthy VM answers again (its stale containers are removed first)."""
        try:
            for container in sorted(host.stale):
                host.ssh.run(f"docker rm -f {shlex.quote(container)}", timeout=30)
                host.stale.discard(container)
        except SSH_ERRORS:
            return False
        host.healthy, host.reason = True, ""
        return True

    def _start(self, job: _Job, host: _Host) -> bool:
        """``docker run`` of the job's container; False when the VM did not answer."""
        environment = worker_environment(self.job_environment, bool(self.golden_image_dir))
        command = run_command(
            job.container,
            self.image,
            worker_command(self.worker_script, job.key, job.task_ids),
            self.golden_image_dir,
        )
        try:
            code, out, err = host.ssh.run(command, stdin=env_file(environment), timeout=300)
        except SSH_ERRORS as exc:
            self._unhealthy(host, f"SSH to {host.name} failed: {exc}")
            # The VM may have started it before the connection failed: removed when the VM
            # answers again, before the job runs anywhere else.
            host.stale.add(job.container)
            return False
        now = time.time()
        with self._lock:
            job.started_at = now
            cancelled = job.cancelled
        if cancelled:  # while docker run was in flight
            self._remove_container(host, job.container)
            with self._lock:
                job.ended, job.released_at = True, time.time()
                host.job = None
            return True
        if code != 0 and "is already in use" not in err:
            with self._lock:
                job.error = ("DockerRunFailed", f"docker run on {host.name}: {err.strip()}")
                job.ended, job.released_at = True, now
                host.job = None
            return True
        threading.Thread(
            target=self._follow, args=(job, host), name=f"vm-tier-{job.key}", daemon=True
        ).start()
        return True

    def _unhealthy(self, host: _Host, reason: str) -> None:
        with self._lock:
            host.healthy, host.reason = False, reason
            host.retry_at = time.time() + self.retry_unhealthy_after

    # -- following a job ----------------------------------------------------------------------

    def _follow(self, job: _Job, host: _Host) -> None:
        """Read the container's log to its end over SSH, reconnecting as needed; then record
        how it ended."""
        down_since: float | None = None
        while not self._closed:
            if job.cancelled:
                return self._end(job, host, None)
            try:
                self._read_log(job, host)
                state = self._inspect(host, job.container)
            except SSH_ERRORS as exc:
                now = time.time()
                down_since = down_since if down_since is not None else now
                gone = self._vm_gone(host)
                if gone is not None or now - down_since >= self.unreachable_after:
                    code, reason = gone or (
                        VM_UNREACHABLE,
                        f"VM {host.name} did not answer over SSH for "
                        f"{now - down_since:.0f}s ({exc})",
                    )
                    self._unhealthy(host, reason)
                    host.stale.add(job.container)
                    return self._end(job, host, None, error=(code, reason))
                time.sleep(self.reconnect_interval)
                continue
            down_since = None
            if state is None:
                error = (WORKER_EXITED, f"container {job.container} is gone from {host.name}")
                return self._end(job, host, None, error=None if job.cancelled else error)
            if state[0] not in ("created", "running", "restarting"):
                if state[1] != 0:
                    self._log_tail(job, host)
                return self._end(job, host, state[1])

    def _read_log(self, job: _Job, host: _Host) -> None:
        channel = host.ssh.open(follow_command(job.container, job.delivered))
        partial = b""
        try:
            while True:
                chunk = channel.recv(65536)
                if not chunk:
                    break
                *complete, partial = (partial + chunk).split(b"\n")
                if complete:
                    text = [c.decode("utf-8", "replace").rstrip("\r") for c in complete]
                    with self._lock:
                        job.lines.extend(text)
                        job.delivered += len(text)
            if channel.recv_exit_status() == -1 or not host.ssh.transport_active():
                raise EOFError(f"the SSH connection to {host.name} dropped")
        finally:
            channel.close()

    def _inspect(self, host: _Host, container: str) -> tuple[str, int | None] | None:
        """(status, exit code) of a container on the VM, None when it has none of that name."""
        code, out, _err = host.ssh.run(f"docker inspect {shlex.quote(container)}", timeout=60)
        if code != 0:
            return None
        state = (json.loads(out) or [{}])[0].get("State") or {}
        return str(state.get("Status", "")).lower(), state.get("ExitCode")

    def _log_tail(self, job: _Job, host: _Host) -> None:
        """The container's last lines with its stderr, for the failure message."""
        try:
            code, out, _err = host.ssh.run(
                f"docker logs --tail 20 {shlex.quote(job.container)} 2>&1", timeout=60
            )
        except SSH_ERRORS:
            return
        if code == 0:
            job.tail = out

    def _vm_gone(self, host: _Host) -> tuple[str, str] | None:
        """Why ARM says the VM cannot run the job (deallocated, deleted), or None."""
        try:
            view = self._instance_view(host)
        except Exception:  # noqa: BLE001 - ARM unreachable says nothing about the VM
            return None
        if view is None:
            return VM_DELETED, f"VM {host.name} was deleted under a running worker"
        if view[0] in _UNBILLED:
            return (
                VM_DEALLOCATED,
                f"VM {host.name} was deallocated (evicted) under a running worker",
            )
        return None

    def _end(
        self, job: _Job, host: _Host, exit_code: int | None, error: tuple[str, str] | None = None
    ) -> None:
        with self._lock:
            job.exit_code, job.error = exit_code, error
            job.ended, job.released_at = True, time.time()
            if host.job == job.key:
                host.job = None  # an unhealthy VM stays out of use until it answers again
        self._dispatch()

    def _reap(self, job: _Job) -> None:
        """Remove a finished container once its end was seen."""
        if job.reaped or job.host is None or job.cancelled or not job.host.healthy:
            return
        job.reaped = True
        host, container = job.host, job.container

        def reap() -> None:
            self._remove_container(host, container)
            self._remove_stale_copies(job)

        threading.Thread(target=reap, daemon=True).start()

    def _remove_stale_copies(self, job: _Job) -> None:
        """The job's container on VMs where a ``docker run`` seemed to fail (best effort)."""
        for host in self.hosts:
            if host is not job.host and job.container in host.stale:
                host.stale.discard(job.container)
                self._remove_container(host, job.container)  # stale again if it fails

    def _remove_container(self, host: _Host, container: str) -> None:
        try:
            host.ssh.run(f"docker rm -f {shlex.quote(container)}", timeout=60)
        except SSH_ERRORS:
            host.stale.add(container)

    # -- a new controller ---------------------------------------------------------------------

    def _adopt(self, handle: str) -> _Job:
        """A job an earlier controller started: found by its container's name on the VMs and
        followed from the start of its log."""
        name = container_name(handle)
        for host in self.hosts:
            if not host.healthy or host.job is not None:
                continue
            try:
                state = self._inspect(host, name)
            except SSH_ERRORS:
                continue
            if state is None:
                continue
            job = _Job(handle, name, [], time.time(), host=host, started_at=time.time())
            job.settled.set()
            with self._lock:
                self._jobs[handle] = job
                host.job = handle
            threading.Thread(
                target=self._follow, args=(job, host), name=f"vm-tier-{handle}", daemon=True
            ).start()
            return job
        raise LookupError(f"no container {name} on any VM of pool {self.pool or '?'}")


def _parse_vm_id(vm_id: str) -> tuple[str, str]:
    found = _VM_ID.search(vm_id or "")
    if found is None:
        raise SetupError(f"not a virtual machine resource id: {vm_id!r}")
    return found.group(1), found.group(2)


def _arm_base_url(cloud_environment: str | None) -> str:
    from msrestazure import azure_cloud

    if cloud_environment and cloud_environment.startswith("https://"):
        cloud = azure_cloud.get_cloud_from_metadata_endpoint(cloud_environment)
    else:
        clouds = {
            c.name: c
            for c in (
                azure_cloud.AZURE_PUBLIC_CLOUD,
                azure_cloud.AZURE_CHINA_CLOUD,
                azure_cloud.AZURE_US_GOV_CLOUD,
            )
        }
        cloud = clouds.get(cloud_environment or "AzureCloud", azure_cloud.AZURE_PUBLIC_CLOUD)
    return cloud.endpoints.resource_manager.rstrip("/")


def arm_client(client_class: Any, env: Mapping[str, str]) -> Any:
    """An azure-mgmt client of the environment's cloud, subscription and credential."""
    base = _arm_base_url(env.get("AZURE_CLOUD_ENVIRONMENT"))
    return client_class(
        credential_from_env(env),
        subscription_from_env(env),
        base_url=base,
        credential_scopes=[base + "/.default"],
    )


def compute_client(env: Mapping[str, str]):
    from azure.mgmt.compute import ComputeManagementClient

    return arm_client(ComputeManagementClient, env)


def monitor_client(env: Mapping[str, str]):
    from azure.mgmt.monitor import MonitorManagementClient

    return arm_client(MonitorManagementClient, env)


def _price(compute: Any, hosts: list[_Host], override: float | None) -> tuple[str, float, str]:
    """The pool's VM size, its hourly price and its region (a pool's VMs have one of each)."""
    sizes, regions = set(), set()
    for host in hosts:
        group, name = _parse_vm_id(host.vm_id)
        vm = compute.virtual_machines.get(group, name)
        spot = (vm.priority or "").lower() in ("spot", "low")
        sizes.add((vm.hardware_profile.vm_size, spot))
        regions.add((vm.location or "").lower().replace(" ", ""))
    if len(sizes) != 1:
        raise SetupError(f"the pool's VMs must have one size and priority; found {sorted(sizes)}")
    if len(regions) != 1:
        raise SetupError(f"the pool's VMs must be in one region; found {sorted(regions)}")
    size, spot = sizes.pop()
    region = regions.pop()
    if override is not None:
        return size, override, region
    price = vm_sizes.vm_prices({"name": size}).get("low_priority" if spot else "dedicated")
    if price is None:
        raise UnknownPrice(
            f"no price known for {size}{' (Spot)' if spot else ''}; set tier_options "
            "price_per_node_hour to account the run's cost"
        )
    return size, price, region


ARGUMENT_SPEC = dict(
    # The pool's VMs, as the azure_rm inventory lists them: name, address (ansible_host), the
    # VM's resource id, and optionally the SSH port.
    hosts=dict(
        type="list",
        elements="dict",
        required=True,
        options=dict(
            name=dict(type="str", required=True),
            address=dict(type="str", required=True),
            vm_id=dict(type="str", required=True),
            port=dict(type="int"),
        ),
    ),
    pool=dict(type="str", default=""),
    image=dict(type="str", required=True),
    user=dict(type="str", default="azureuser"),
    ssh_private_key_file=dict(type="path", required=True),
    ssh_port=dict(type="int", default=22),
    price_per_node_hour=dict(type="float"),
    unreachable_after=dict(type="float", default=60),
    # WAA's golden image on each VM (absolute, or under ~/, as the vm_pool bootstrap copied it),
    # mounted read-only into every worker's container; empty: none (no VM boot).
    golden_image_dir=dict(type="str", default=""),
)


def build(context: TierContext) -> VmTier:
    if PARAMIKO_IMPORT_ERROR:
        raise MissingRequirement(missing_required_lib("paramiko"))
    options = context.options
    if not options["hosts"]:
        raise SetupError("the VM tier needs at least one host (tier_options.hosts is empty)")
    hosts = [
        _Host(
            SshHost(
                name=h["name"],
                address=h["address"],
                port=h.get("port") or options["ssh_port"],
                user=options["user"],
                key_file=options["ssh_private_key_file"],
            ),
            vm_id=h["vm_id"],
        )
        for h in options["hosts"]
    ]
    for host in hosts:
        _parse_vm_id(host.vm_id)
    environment = {**context.job_environment, **context.secret_environment}
    env_file(environment)  # a bad variable is an error now, not at the first job
    image_dir = check_image_dir(options.get("golden_image_dir") or "")
    compute = compute_client(context.environment)
    size, price, region = _price(compute, hosts, options.get("price_per_node_hour"))
    return VmTier(
        hosts=hosts,
        image=options["image"],
        worker_script=context.worker_script,
        compute=compute,
        pool=options["pool"],
        job_environment=environment,
        golden_image_dir=image_dir,
        price_per_node_hour=price,
        vm_size=size,
        unreachable_after=options["unreachable_after"],
        region=region,
        monitor_factory=lambda: monitor_client(context.environment),
    )


def fingerprint(options: Mapping[str, Any]) -> dict[str, Any]:
    """The pool and the image make the run; its VMs may be replaced between sessions."""
    return {"pool": options.get("pool"), "image": options.get("image")}


TIER = TierSpec(
    name="vm",
    argument_spec=ARGUMENT_SPEC,
    build=build,
    fingerprint=fingerprint,
    setup_errors=(MissingCredentials, UnknownPrice, SetupError),
)
