"""The interface between the evaluation engine and a place that runs workers.

A tier (Azure ML, Azure Batch, VMs over SSH, local subprocesses) runs the worker script
(``worker/waa_worker.py``) once per job and lets the engine read its stdout. Everything else
(scheduling, health checks, retries, the ledger, cost) is the engine's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import NodeUsage


class JobState(StrEnum):
    QUEUED = "QUEUED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELED)


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    error_code: str | None = None
    error_message: str | None = None
    node_started_at: float | None = None  # unix time the node was acquired for this job
    node_released_at: float | None = None  # unix time it was given back


class Tier(Protocol):
    name: str

    def submit(self, job_key: str, task_ids: list[str]) -> str:
        """Start a worker for these tasks; return the tier's handle. ``job_key`` is unique per
        attempt, so a tier may use it as an idempotency key."""
        ...

    def status(self, handle: str) -> JobStatus: ...

    def read_new_lines(self, handle: str) -> list[str]:
        """Complete stdout lines of the worker not returned by an earlier call."""
        ...

    def cancel(self, handle: str) -> None:
        """Ask the tier to stop the job; must not raise if the job already ended."""
        ...


class MeasuresNodeTime(Protocol):
    """Optional: a tier that can measure the node time of its whole pool (nodes provisioning,
    busy and idle until scale-down) is billed by that instead of by job intervals."""

    def node_usage(self, now: float, *, final: bool) -> NodeUsage:
        """Node time so far; with ``final`` also the idle time still to come before the pool
        scales down after the run."""
        ...
