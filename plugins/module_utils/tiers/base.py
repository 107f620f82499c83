# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The contract between the evaluation engine (and ``eval_run``) and a place that runs workers.

A tier (Azure ML, Azure Batch, VMs over SSH, local subprocesses) runs the worker script
(``worker/waa_worker.py``) once per job and lets the engine read its stdout. Everything else
(scheduling, health checks, retries, the ledger, cost) is the engine's business.

A tier is one module under ``tiers/`` exposing ``TIER``, a :class:`TierSpec`: its name, the
argument spec of its ``tier_options``, what of those options makes a run the same run, and how
to build it from the play's arguments. Capabilities only some tiers have are Protocols of their
own (:class:`MeasuresNodeTime`, :class:`FixedCapacity`, :class:`FeedsTasks`), checked with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import (
    NodeInterval,
    NodeUsage,
)


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
    running_at: float | None = None  # unix time the job started running, if the tier knows it
    # QUEUED only: the tier knows the job waits for a node of the run's own that an earlier job
    # still holds (a cancelled one included, until its node is given back), so its container
    # has had no chance to start.
    waits_for_own_node: bool = False


class Tier(Protocol):
    """What callers use of every tier. Subclass :class:`BaseTier` for the defaults."""

    name: str
    price_per_node_hour: float
    # The tier's own error codes (lowercase) mapped to the project's canonical codes
    # (``failures``); consulted before the generic classifier.
    failure_codes: Mapping[str, str]

    def submit(self, job_key: str, task_ids: list[str]) -> str:
        """Start a worker for these tasks; return the tier's handle. ``job_key`` is unique per
        attempt, so a tier may use it as an idempotency key."""

    def status(self, handle: str) -> JobStatus: ...

    def read_new_lines(self, handle: str) -> list[str]:
        """Complete stdout lines of the worker not returned by an earlier call."""

    def cancel(self, handle: str) -> None:
        """Ask the tier to stop the job; must not raise if the job already ended."""

    def handle_for(self, job_key: str) -> str | None:
        """The handle a job of this key has (or would have), for tiers that name jobs after
        their keys: a job whose submit was interrupted can still be found and cancelled."""

    def describe(self) -> dict[str, Any]:
        """What the run ran on, for the report."""

    def close(self) -> None:
        """Release what the tier holds on the controller (processes, sessions)."""


class BaseTier:
    """Defaults for the optional parts of :class:`Tier`."""

    name: str = "tier"
    price_per_node_hour: float = 0.0
    failure_codes: Mapping[str, str] = {}

    def handle_for(self, job_key: str) -> str | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"tier": self.name, "price_per_node_hour": self.price_per_node_hour}

    def close(self) -> None:
        return None


@runtime_checkable
class MeasuresNodeTime(Protocol):
    """A tier that can measure the node time of its whole pool (nodes provisioning, busy and
    idle until scale-down) is billed by that instead of by job intervals."""

    def node_usage(self, now: float, *, final: bool) -> NodeUsage:
        """Node time so far; with ``final`` also the idle time still to come before the pool
        scales down after the run (reported apart as ``still_to_come``)."""

    def unobserved_node_seconds(
        self, start: float, end: float, nodes_at_start: int, jobs: list[NodeInterval]
    ) -> float:
        """An estimate of the pool's node time between ``start`` (the last sample of an earlier
        session, which held ``nodes_at_start`` nodes) and ``end``, while no controller watched
        it; ``jobs`` are the node intervals of the jobs that ran meanwhile."""


@runtime_checkable
class CachesStatus(Protocol):
    """A tier whose ``status`` may answer from its last read (it reads the service only when
    something can have changed): the engine asks for a fresh read before it judges a job
    stuck."""

    def expire_status(self, handle: str) -> None:
        """The next ``status`` of this job reads the service."""


@runtime_checkable
class FeedsTasks(Protocol):
    """A tier whose workers take more tasks, after those they were started with, from a task
    feed the engine writes (``WAA_TASK_FEED`` of worker/waa_worker.py): a node keeps one job,
    and its booted VM, for as long as there is work, instead of a job restart per chunk."""

    # The feed is set up for this run (the tier passes its location to every job).
    feeds_tasks: bool

    def offer(self, handle: str, seq: int, task_ids: list[str]) -> None:
        """Write entry ``seq`` (1, 2, ...) of the job's feed; an empty list ends the job. The
        same entry written again holds the same tasks."""


@runtime_checkable
class FixedCapacity(Protocol):
    """A tier with a fixed pool of hosts (VMs over SSH): at most ``capacity()`` jobs at once,
    whatever the number of workers asked for."""

    def capacity(self) -> int: ...


@dataclass(frozen=True)
class TierContext:
    """The play's arguments a tier is built from."""

    options: Mapping[str, Any]  # the tier's own options, validated against its argument spec
    environment: Mapping[str, str]  # os.environ + the task's environment + authentication
    run_name: str
    worker_script: str
    state_dir: Path  # this run's directory on the controller
    job_environment: Mapping[str, str] = field(default_factory=dict)
    secret_environment: Mapping[str, str] = field(default_factory=dict)
    job_timeout: int = 14400


@dataclass(frozen=True)
class TierSpec:
    name: str
    # Ansible argument spec of ``tier_options`` for this tier.
    argument_spec: Mapping[str, Any]
    build: Callable[[TierContext], Tier]
    # The options that make a run the same run (the rest are tuning); all of them by default.
    fingerprint: Callable[[Mapping[str, Any]], dict[str, Any]] = dict
    # Errors that building the tier raises for a bad setting or missing credentials: shown to
    # the user as they are.
    setup_errors: tuple[type[Exception], ...] = ()
