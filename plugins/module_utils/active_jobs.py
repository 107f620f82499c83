# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's book of the jobs it runs: what each active job has shown so far, whether it is
healthy, the node time each one held, and the one way a job is closed (cancelled or not, its
node interval closed, its end recorded in the ledger)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import NodeInterval
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    STARTUP_TIMEOUT,
    STUCK,
    Failure,
    FailureKind,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (
    JobRow,
    Ledger,
    job_ended,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    JobState,
    JobStatus,
    Tier,
)

log = logging.getLogger(__name__)


@dataclass
class ActiveJob:
    job_key: str
    task_ids: list[str]
    submitted_at: float
    handle: str = ""
    state: JobState = JobState.QUEUED
    running_since: float | None = None
    first_event_at: float | None = None
    last_event_at: float | None = None
    reported: set[str] = field(default_factory=set)
    worker_finished: bool = False
    poll_not_before: float = 0.0
    in_flight: str | None = None
    in_flight_since: float | None = None
    client_idle_s: float = 0.0
    worker: str | None = None
    node_started_at: float | None = None
    node_released_at: float | None = None
    poll_errors: int = 0
    # The startup clock: submission, moved on while the job waits behind a busy node of the run.
    startup_from: float = 0.0
    # When a controller took over the job from an earlier one that died: whatever happened to it
    # in between (a node freed for it) nobody saw, so its startup clock starts again here.
    adopted_at: float | None = None
    next_poll_at: float = 0.0
    # When the submit that was accepted was sent: a tier may start the job before it answers.
    sent_at: float | None = None
    # Judged unhealthy on a status the tier may have answered from its last read: the verdict
    # waits for the next poll, which reads the job's status afresh.
    confirming: bool = False
    status_seen: bool = False  # a status read of it succeeded
    tier_says_waiting: bool = False  # its last status: queued behind a node of the run's own
    # Task feed entries written for it (entry 1 first; an empty one ends the job), and how many
    # of them the worker said it took (``tasks_added``).
    offers: list[list[str]] = field(default_factory=list)
    offers_taken: int = 0

    def unreported(self) -> list[str]:
        return [t for t in self.task_ids if t not in self.reported]

    def unstarted(self) -> list[str]:
        """Tasks it holds that it has neither reported nor started."""
        return [t for t in self.unreported() if t != self.in_flight]

    def untaken(self) -> list[str]:
        """Tasks of feed entries written for it that its worker never said it took."""
        return [t for entry in self.offers[self.offers_taken :] for t in entry]

    @property
    def entry_waiting(self) -> bool:
        """A feed entry was written for it that its worker has not said it took."""
        return len(self.offers) > self.offers_taken

    @property
    def feed_closed(self) -> bool:
        """An empty entry was written: its worker ends after the tasks it has."""
        return bool(self.offers) and not self.offers[-1]


def health_failure(
    job: ActiveJob, now: float, *, startup_timeout: float, stuck_after: float
) -> Failure | None:
    """Why a job that is not over must be given up on, or None while it is healthy: no worker
    event within ``startup_timeout`` of its startup clock (submission, its adoption after a
    controller died, or the last moment it waited behind a busy node of the run) or of reaching
    RUNNING, none for ``stuck_after``, or
    a WAA client silent that long on the task in flight."""
    if job.first_event_at is None:
        if job.running_since is not None:
            since, where = job.running_since, "reaching RUNNING"
        else:
            # The latest of the clocks that apply (on a tie, the earliest named).
            clocks = [(job.submitted_at, "submission")]
            if job.adopted_at is not None:
                clocks.append((job.adopted_at, "this controller's taking it over"))
            clocks.append((job.startup_from, "a node of this run became free for it"))
            since, where = max(clocks, key=lambda clock: clock[0])
        if now - since > startup_timeout:
            if job.state is JobState.QUEUED:
                cause = "no node was given to it (the cluster did not scale up)"
            else:
                cause = "the container probably never started"
            message = (
                f"worker printed no event within {startup_timeout:.0f}s of {where} "
                f"(job state {job.state.value}); {cause}"
            )
            return Failure(FailureKind.TRANSIENT, STARTUP_TIMEOUT, message)
        return None
    if job.last_event_at is None:
        raise AssertionError("job.last_event_at is not set")
    silence = now - job.last_event_at
    if silence > stuck_after:
        message = f"no worker event for {silence:.0f}s (limit {stuck_after:.0f}s)"
        return Failure(FailureKind.TRANSIENT, STUCK, message)
    if job.in_flight is not None and job.client_idle_s > stuck_after:
        message = (
            f"WAA client silent for {job.client_idle_s:.0f}s on task {job.in_flight} "
            f"(limit {stuck_after:.0f}s)"
        )
        return Failure(FailureKind.TRANSIENT, STUCK, message)
    return None


class JobBook:
    """The active jobs of a run and the node intervals of all its jobs."""

    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.ledger: Ledger | None = None
        self.active: dict[str, ActiveJob] = {}
        self.intervals: dict[str, NodeInterval] = {}

    def attach(self, ledger: Ledger) -> None:
        """Use this ledger, and take the node intervals of the jobs it already holds."""
        self.ledger = ledger
        for job in ledger.jobs():
            if job.node_started_at is None:
                continue
            # A job left behind by a killed controller: assume its node was released when last
            # seen, never that it is still running up a bill.
            released = job.node_released_at or job.ended_at or job.node_started_at
            self.intervals[job.job_key] = NodeInterval(
                job.job_key, job.node_started_at, max(released, job.node_started_at)
            )

    def add(self, job: ActiveJob) -> None:
        self.active[job.job_key] = job

    def jobs(self) -> list[ActiveJob]:
        return list(self.active.values())

    def busy_slots(self) -> int:
        """Jobs whose worker has not said it finished; a finished worker's job is only
        finalizing, so its slot goes to the next chunk at once."""
        return sum(1 for job in self.active.values() if not job.worker_finished)

    def waiting_for_node(self, job: ActiveJob, nodes: int) -> bool:
        """Is this job queued behind busy nodes of the run's own (``nodes`` of them hold a job
        of ours), rather than a container that was given a node and never started? A job
        submitted before it whose status could not be read yet (throttled) counts as holding
        one: what we could not look at is not taken as a free node. A tier that knows (the VM
        tier: a node still held by a cancelled job the book no longer has) says so itself."""
        if job.first_event_at is not None or job.state is not JobState.QUEUED:
            return False
        if job.tier_says_waiting:
            return True
        holding = sum(
            1
            for other in self.active.values()
            if other is not job
            and (
                other.first_event_at is not None
                or other.state is not JobState.QUEUED
                or (not other.status_seen and other.submitted_at <= job.submitted_at)
            )
        )
        return holding >= nodes

    def note_status(self, job: ActiveJob, status: JobStatus, now: float) -> None:
        """Take what a poll said of the job's state and node times, recording a change."""
        before = (job.state, job.node_started_at, job.node_released_at)
        job.status_seen = True
        job.tier_says_waiting = status.state is JobState.QUEUED and status.waits_for_own_node
        if status.node_started_at is not None:
            job.node_started_at = status.node_started_at
        if status.node_released_at is not None:
            job.node_released_at = status.node_released_at
        if job.node_started_at is not None:
            self.intervals[job.job_key] = NodeInterval(
                job.job_key, job.node_started_at, job.node_released_at
            )
        if status.state is JobState.RUNNING and job.running_since is None:
            # The tier's own start time when it has one: a job first seen running late (reads
            # throttled) has had its startup time all the same.
            started = status.running_at
            sent = job.sent_at if job.sent_at is not None else job.submitted_at
            plausible = started is not None and sent <= started <= now
            job.running_since = started if plausible else now
        job.state = status.state
        if (job.state, job.node_started_at, job.node_released_at) != before:
            if self.ledger is None:
                raise AssertionError("self.ledger is not set")
            self.ledger.update_job(
                job.job_key,
                state=status.state.value,
                node_started_at=job.node_started_at,
                node_released_at=job.node_released_at,
            )

    def cancel(self, job_key: str, handle: str) -> bool:
        """Ask the tier to stop a job; a failure is logged, never raised (one failed cancel
        must not stop the others)."""
        try:
            self.tier.cancel(handle)
        except Exception as exc:
            log.warning("could not cancel %s (%s): %s", job_key, handle, short(exc))
            return False
        return True

    def close_job(
        self,
        job_key: str,
        now: float,
        *,
        cancel: bool,
        handle: str | None = None,
        state: JobState | None = None,
        failure: Failure | None = None,
        failure_code: str | None = None,
        reason: str | None = None,
    ) -> ActiveJob | None:
        """End a job: cancel it on the tier if asked, drop it from the active jobs, close its
        node interval at ``now`` unless the tier said when the node was released, and record
        its end (state, failure, reason) in the ledger. Returns the active job, if it was one."""
        if self.ledger is None:
            raise AssertionError("self.ledger is not set")
        job = self.active.pop(job_key, None)
        handle = handle or (job.handle if job is not None else None)
        if cancel and handle:
            self.cancel(job_key, handle)
        fields: dict[str, object] = {"ended_at": now}
        if handle:
            fields["handle"] = handle
        if state is not None:
            fields["state"] = state
        if failure is not None:
            fields.update(
                failure_kind=failure.kind.value, failure_code=failure.code, reason=failure.message
            )
        if failure_code is not None:
            fields["failure_code"] = failure_code
        if reason is not None:
            fields["reason"] = reason
        if job is not None and job.node_started_at is not None:
            if job.node_released_at is None:
                # The tier did not say when it gave the node back: bill up to now.
                job.node_released_at = now
            self.intervals[job_key] = NodeInterval(
                job_key, job.node_started_at, job.node_released_at
            )
            fields["node_released_at"] = job.node_released_at
        self.ledger.update_job(job_key, **fields)
        return job

    def unfinished_rows(self) -> list[JobRow]:
        """Jobs of the ledger that never ended (left by a controller that stopped)."""
        if self.ledger is None:
            raise AssertionError("self.ledger is not set")
        return [
            row
            for row in self.ledger.jobs()
            if row.job_key not in self.active and not job_ended(row.state)
        ]


def short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."
