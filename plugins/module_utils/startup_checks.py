# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's watch over WAA's boot inside each job: the worker's boot phases (``image_ready``,
``vm_starting``, ``vm_ready``, ``vm_lost``; see worker/waa_worker.py), the VM boot limit, how a
boot failure is classified, and each job's boot time for the report.

Two limits cover a job's start: the container's first event (``startup_timeout``, in
``active_jobs.health_failure``) and the VM answering its probe (``vm_boot_timeout``, here),
counted from the worker's ``vm_starting`` of each boot (a restart starts the clock again).
Heartbeats continue through the boot, so a long boot is never taken for a stuck worker.

Classification of the worker's ``failed`` events of the boot:

- ``GoldenImageMissing``: permanent; the fix names the upload step (role waa_image).
- ``NestedVirtualizationUnavailable`` (no /dev/kvm, KVM permission denied): permanent; use a
  nested-virtualization size with security type Standard.
- ``OutOfDisk``: permanent; a larger disk.
- ``VmBootTimeout``, ``VmBootFailed``: transient; the job is cancelled and its tasks run on
  another node.
- ``VmUnresponsive`` (the VM stopped answering and its one restart inside the container did not
  help): transient; the job is given up as crashed, the task in flight is charged an attempt
  and runs elsewhere.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    HINTS,
    NESTED_VIRTUALIZATION_UNAVAILABLE,
    Failure,
    FailureKind,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    WorkerEvent,
)

# WAA's Windows VM boots from its prepared image in a few minutes on a 4-8 vCPU node; its first
# boot of a fresh image (Windows' own setup) takes 15-25 minutes. 20 minutes is the limit: a
# prepared image that has not answered by then is not going to.
DEFAULT_VM_BOOT_TIMEOUT_S = 1200.0

GOLDEN_IMAGE_MISSING = "GoldenImageMissing"
OUT_OF_DISK = "OutOfDisk"
VM_BOOT_TIMEOUT = "VmBootTimeout"
VM_BOOT_FAILED = "VmBootFailed"
VM_UNRESPONSIVE = "VmUnresponsive"
BOOT_EVENTS = frozenset({"image_ready", "vm_starting", "vm_ready", "vm_lost"})

UPLOAD_HINT = (
    "upload WAA's prepared image with playbooks/waa_image.yml (role waa_image: "
    "-e eval_golden_image_source=<the folder WAA's --prepare-image filled>) and give the tier "
    "its location (eval_golden_image on Azure ML; on the VM tier playbooks/vm.yml copies it onto "
    "each VM and sets golden_image_dir), so that every job mounts it read-only"
)
PERMANENT_BOOT_FAILURES: dict[str, str] = {
    GOLDEN_IMAGE_MISSING: UPLOAD_HINT,
    NESTED_VIRTUALIZATION_UNAVAILABLE: HINTS[NESTED_VIRTUALIZATION_UNAVAILABLE],
    OUT_OF_DISK: "use nodes with a larger disk for the 30 GB image",
}
TRANSIENT_BOOT_FAILURES = frozenset({VM_BOOT_TIMEOUT, VM_BOOT_FAILED, VM_UNRESPONSIVE})
_OUTPUT_LINES = 5


@dataclass
class JobBoot:
    """What one job's worker said of its VM so far."""

    image_ready_at: float | None = None
    vm_starting_at: float | None = None
    vm_ready_at: float | None = None
    boot_s: float | None = None  # the worker's own measure of the last boot
    boots: int = 0
    restarts: int = 0
    failure: Failure | None = None

    @property
    def booting(self) -> bool:
        return self.vm_starting_at is not None and self.vm_ready_at is None


class BootWatch:
    """The boot of every job of a run (this session's view)."""

    def __init__(self, vm_boot_timeout: float = DEFAULT_VM_BOOT_TIMEOUT_S) -> None:
        if vm_boot_timeout <= 0:
            raise ValueError("vm_boot_timeout must be positive")
        self.vm_boot_timeout = vm_boot_timeout
        self.jobs: dict[str, JobBoot] = {}

    def take(self, job_key: str, event: WorkerEvent, now: float) -> bool:
        """Take one worker event; True when it was the boot's (the engine has nothing more to
        do with it: a boot failure is handed out by ``failure``)."""
        boot = self.jobs.setdefault(job_key, JobBoot())
        name = event.event
        if name == "image_ready":
            boot.image_ready_at = now
        elif name == "vm_starting":
            boot.vm_starting_at, boot.vm_ready_at = now, None
            boot.boots += 1
        elif name == "vm_ready":
            boot.vm_ready_at = now
            worker_s = event.get("boot_s")
            boot.boot_s = float(worker_s) if isinstance(worker_s, int | float) else None
        elif name == "vm_lost":
            boot.restarts += 1
        elif name == "failed" and boot_failure_code(event) is not None:
            boot.failure = boot.failure or _classified(event)
        else:
            return False
        return True

    def failure(self, job_key: str, now: float) -> Failure | None:
        """Why the job's boot must be given up on: a boot failure the worker reported, or a VM
        that has not answered within the limit of its ``vm_starting``."""
        boot = self.jobs.get(job_key)
        if boot is None:
            return None
        if boot.failure is not None:
            return boot.failure
        if boot.booting and now - boot.vm_starting_at > self.vm_boot_timeout:
            waited = now - boot.vm_starting_at
            return Failure(
                FailureKind.TRANSIENT,
                VM_BOOT_TIMEOUT,
                f"the Windows VM did not answer its probe {waited:.0f}s after vm_starting "
                f"(boot {boot.boots}; limit eval_vm_boot_timeout={self.vm_boot_timeout:.0f}s); "
                "its tasks run on another node",
            )
        return None

    def poll_by(self, job_key: str, next_poll_at: float) -> float:
        """The job's next poll, brought forward to its boot deadline, so that a hung boot is
        seen within the limit plus one poll."""
        boot = self.jobs.get(job_key)
        if boot is None or not boot.booting:
            return next_poll_at
        return min(next_poll_at, boot.vm_starting_at + self.vm_boot_timeout)

    def report(self) -> dict[str, Any]:
        """Per job: seconds from the image check to the probe's answer, as the controller saw
        them, and the worker's own boot time; and the run's median and maximum."""
        jobs = {}
        for key, boot in sorted(self.jobs.items()):
            seen = (
                round(boot.vm_ready_at - boot.vm_starting_at, 3)
                if boot.vm_ready_at is not None and boot.vm_starting_at is not None
                else None
            )
            jobs[key] = {
                "boot_s": boot.boot_s if boot.boot_s is not None else seen,
                "boots": boot.boots,
                "restarts": boot.restarts,
                "ready": boot.vm_ready_at is not None,
                "failure": boot.failure.code if boot.failure else None,
            }
        times = [j["boot_s"] for j in jobs.values() if j["boot_s"] is not None]
        return {
            "vm_boot_timeout_s": self.vm_boot_timeout,
            "median_boot_s": round(statistics.median(times), 3) if times else None,
            "max_boot_s": max(times) if times else None,
            "jobs": jobs,
        }


def boot_failure_code(event: WorkerEvent) -> str | None:
    code = str(event.get("code") or "")
    if code in PERMANENT_BOOT_FAILURES or code in TRANSIENT_BOOT_FAILURES:
        return code
    return None


def _classified(event: WorkerEvent) -> Failure:
    code = boot_failure_code(event) or VM_BOOT_FAILED
    message = str(event.get("message") or code)
    output = [str(line) for line in event.get("boot_output") or []][-_OUTPUT_LINES:]
    if output:
        message += "; boot output: " + " | ".join(output)
    if code in PERMANENT_BOOT_FAILURES:
        return Failure(FailureKind.PERMANENT, code, message, hint=PERMANENT_BOOT_FAILURES[code])
    return Failure(FailureKind.TRANSIENT, code, message)
