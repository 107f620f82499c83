"""The evaluation run loop, shared by every tier.

The engine hands chunks of tasks to jobs on a tier, reads the jobs' worker events, records each
task's final result in the ledger the moment it arrives, and keeps the run healthy: startup
verification, stuck detection, failure classification, retries with backoff, a circuit breaker,
and cancellation of everything it started when it is interrupted or hits a permanent failure.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.circuit_breaker import (
    BreakerState,
    CircuitBreaker,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import (
    VM_PRICES,
    CostBreakdown,
    NodeInterval,
    NodeUsage,
    TaskTiming,
    compute_cost,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    JOB_CANCELED,
    STARTUP_TIMEOUT,
    STUCK,
    TASK_ERROR,
    THROTTLED,
    WORKER_CRASH,
    Failure,
    FailureKind,
    PermanentFailure,
    classify,
    classify_exception,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (
    Ledger,
    TaskResultRow,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.progress import (
    ProgressCounters,
    RunProgress,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.retries import (
    RetryPolicy,
    backoff_delay,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.scheduler import (
    Scheduler,
    make_scheduler,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.status_file import (
    CostFigures,
    DashboardSnapshot,
    InfrastructureFigures,
    PerformanceFigures,
    TaskCounts,
    write_status,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.task_order import longest_first
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier import (
    JobState,
    JobStatus,
    Tier,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    WorkerEvent,
    parse_lines,
)

log = logging.getLogger(__name__)


class RunCancelled(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C or SIGTERM) after cancelling what it started."""


class TierUnhealthy(Exception):
    """The circuit breaker stayed open with nothing running for longer than allowed."""


@dataclass(frozen=True)
class EngineConfig:
    workers: int = 10
    poll_interval: float = 10.0
    startup_timeout: float = 600.0
    stuck_after: float = 600.0
    max_attempts: int = 3
    scheduling: str = "dynamic"
    chunk_factor: float = 2.0
    max_chunk: int | None = None
    retry_task_errors: bool = True
    requeue_backoff_initial: float = 5.0
    requeue_backoff_max: float = 300.0
    requeue_backoff_jitter: float = 5.0
    breaker_threshold: int = 3
    breaker_cooldown: float = 300.0
    breaker_give_up_after: float = 1800.0
    price_per_node_hour: float = VM_PRICES["Standard_D4_v3"]
    submit_retry: RetryPolicy | None = None
    run_id: str | None = None
    config_fingerprint: str = ""
    status_file: str | Path | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if self.scheduling not in ("dynamic", "static"):
            raise ValueError("scheduling must be 'dynamic' or 'static'")


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    domain: str | None
    status: str
    score: float
    duration_s: float | None
    error: str | None
    attempts: int
    job_key: str | None


@dataclass(frozen=True)
class DomainSummary:
    domain: str
    total: int
    succeeded: int
    failed: int
    errored: int
    success_rate: float
    mean_score: float


@dataclass(frozen=True)
class RetryRecord:
    at: float
    job_key: str
    handle: str | None
    kind: str
    code: str
    reason: str
    requeued_task_ids: tuple[str, ...]


@dataclass(frozen=True)
class RunResult:
    run_id: str
    tier: str
    status: str
    total_tasks: int
    tasks: dict[str, TaskOutcome]
    domains: dict[str, DomainSummary]
    succeeded: int
    failed: int
    errored: int
    success_rate: float
    mean_score: float
    retries: list[RetryRecord]
    jobs_submitted: int
    duplicates_ignored: int
    started_at: float
    finished_at: float
    makespan_s: float
    avg_task_duration_s: float | None
    cost: CostBreakdown

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cost"] = self.cost.to_dict()
        data["retries"] = [dataclasses.asdict(r) for r in self.retries]
        return data


@dataclass
class _ActiveJob:
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

    def unreported(self) -> list[str]:
        return [t for t in self.task_ids if t not in self.reported]


# A tier call that keeps failing this many polls in a row counts as a lost job.
_MAX_POLL_ERRORS = 5


class EvaluationEngine:
    def __init__(
        self,
        tier: Tier,
        tasks: Sequence[tuple[str, str]],
        ledger_path: str | Path,
        config: EngineConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        progress: RunProgress | None = None,
        rng: random.Random | None = None,
        handle_signals: bool = True,
    ) -> None:
        """``tasks`` are (domain, task_id) pairs in evaluation order."""
        self.tier = tier
        self.config = config or EngineConfig()
        self.ledger_path = Path(ledger_path)
        self._clock = clock
        self._sleep = sleep
        self._progress = progress
        self._rng = rng or random.Random()
        self._handle_signals = handle_signals
        self._task_ids = [task_id for _, task_id in tasks]
        repeated = sorted(t for t, n in Counter(self._task_ids).items() if n > 1)
        if repeated:
            raise ValueError(f"task ids must be unique; repeated: {repeated[:5]}")
        self._domains = {task_id: domain for domain, task_id in tasks}
        self.breaker = CircuitBreaker(
            target=tier.name,
            failure_threshold=self.config.breaker_threshold,
            cooldown_s=self.config.breaker_cooldown,
            clock=clock,
        )
        self._active: dict[str, _ActiveJob] = {}
        self._final: dict[str, TaskResultRow] = {}
        self._intervals: dict[str, NodeInterval] = {}
        self._retries: list[RetryRecord] = []
        self._hold_until = 0.0
        self._unhealthy_since: float | None = None
        self._last_failure: Failure | None = None
        self._jobs_submitted = 0
        self._job_seq = 0
        self._instance = ""
        self._session = 1
        self._cancelling = False
        self.run_id = ""
        self.ledger: Ledger | None = None
        self._scheduler: Scheduler = make_scheduler("dynamic", [], 1)

    # public ----------------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Run every task without a final result in the ledger; return when all have one.

        Raises PermanentFailure (with the hint), TierUnhealthy, RunCancelled or
        KeyboardInterrupt after cancelling every job it started.
        """
        started_at = self._clock()
        try:
            ledger = self._open_ledger(started_at)
            self._cancel_orphans(ledger, started_at)
            self._scheduler = make_scheduler(
                self.config.scheduling,
                self._queue_order(ledger.pending(self._task_ids)),
                self.config.workers,
                factor=self.config.chunk_factor,
                max_chunk=self.config.max_chunk,
            )
            self._supervise(ledger)
            ledger.set_status("completed")
            finished_at = self._clock()
            self._publish(finished_at, "completed")
            return self._result(started_at, finished_at)
        finally:
            self.close()

    def _supervise(self, ledger: Ledger) -> None:
        previous_handler = self._install_signal_handler()
        if self._progress is not None:
            self._progress.start()
        try:
            self._loop()
        except BaseException as exc:
            self._cancelling = True
            status = _status_for(exc)
            self._cancel_all(self._clock(), reason=f"run {status}: {_short(exc)}")
            ledger.set_status(status)
            self._publish(self._clock(), status)
            raise
        finally:
            self._restore_signal_handler(previous_handler)
            if self._progress is not None:
                self._progress.stop()

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None

    # setup -----------------------------------------------------------------------------------

    def _open_ledger(self, now: float) -> Ledger:
        ledger = Ledger(self.ledger_path)
        self.ledger = ledger
        existing = ledger.run_meta()
        run_id = self.config.run_id or (
            existing.run_id if existing else _new_run_id(now, self._rng)
        )
        meta = ledger.init_run(run_id, self.config.config_fingerprint, now)
        self.run_id = meta.run_id
        self._instance = meta.instance
        self._session = meta.sessions
        self._job_seq = ledger.job_count()
        known = set(self._task_ids)
        self._final = {tid: row for tid, row in ledger.results().items() if tid in known}
        for job in ledger.jobs():
            if job.node_started_at is None:
                continue
            # A job left behind by a killed controller: assume its node was released when last
            # seen, never that it is still running up a bill.
            released = job.node_released_at or job.ended_at or job.node_started_at
            self._intervals[job.job_key] = NodeInterval(
                job.job_key, job.node_started_at, max(released, job.node_started_at)
            )
        return ledger

    def _install_signal_handler(self) -> Any:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return None

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if not self._cancelling:
                raise RunCancelled(f"received signal {signum}")

        return signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_signal_handler(self, previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    # the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            now = self._clock()
            self._fill_slots(now)
            self._check_give_up(now)
            self._publish(now, "running")
            if not self._active and self._scheduler.remaining == 0:
                return
            self._sleep(self.config.poll_interval)
            now = self._clock()
            for job in list(self._active.values()):
                if now >= job.poll_not_before:
                    self._poll_job(job, now)

    def _queue_order(self, pending: list[str]) -> list[str]:
        """WAA's file order for static sharding (its compatibility mode); longest expected
        first for dynamic chunking, learning from the durations already in the ledger."""
        if self.config.scheduling == "static":
            return pending
        observed: dict[str, list[float]] = {}
        for row in self._final.values():
            if row.domain and row.duration_s:
                observed.setdefault(row.domain, []).append(row.duration_s)
        return longest_first(pending, self._domains, observed)

    def _busy_slots(self) -> int:
        """Jobs whose worker has not said it finished; a finished worker's job is only
        finalizing, so its slot goes to the next chunk at once."""
        return sum(1 for job in self._active.values() if not job.worker_finished)

    def _fill_slots(self, now: float) -> None:
        while self._busy_slots() < self.config.workers and self._scheduler.remaining:
            if now < self._hold_until or not self.breaker.allow():
                return
            chunk: list[str] = []
            while not chunk and self._scheduler.remaining:
                chunk = [t for t in self._scheduler.next_chunk() if t not in self._final]
            if not chunk:
                return
            self._submit(chunk, now)

    def _submit(self, chunk: list[str], now: float) -> None:
        assert self.ledger is not None
        self._job_seq += 1
        job_key = "-".join(p for p in (self.run_id, self._instance, f"{self._job_seq:04d}") if p)
        # Recorded before submitting so that a controller killed mid-submit leaves a trace.
        self.ledger.record_job_submitted(job_key, None, chunk, now)
        policy = self.config.submit_retry or RetryPolicy(
            max_attempts=4, initial_delay=2.0, max_delay=30.0, max_total_delay=90.0
        )
        if policy.sleep is time.sleep:
            policy = dataclasses.replace(policy, sleep=self._sleep)

        def on_retry(attempt: int, failure: Failure, delay: float) -> None:
            self._retries.append(
                RetryRecord(
                    at=self._clock(),
                    job_key=job_key,
                    handle=None,
                    kind=failure.kind.value,
                    code=failure.code,
                    reason=f"submit attempt {attempt} failed: {failure.message}",
                    requeued_task_ids=(),
                )
            )

        policy = dataclasses.replace(policy, on_retry=on_retry)
        try:
            handle = policy.call(self.tier.submit, job_key, list(chunk))
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Interrupted inside the submit: the tier may have accepted the job already.
                self._cancel_by_key(job_key, "interrupted while submitting")
                raise
            failure = classify_exception(exc)
            self.ledger.update_job(
                job_key,
                state="SUBMIT_FAILED",
                ended_at=self._clock(),
                failure_kind=failure.kind.value,
                failure_code=failure.code,
                reason=failure.message,
            )
            self._scheduler.requeue(chunk)
            if not failure.is_transient:
                raise PermanentFailure(failure) from exc
            self._note_transient(job_key, None, failure, self._clock(), tuple(chunk))
            return
        self._jobs_submitted += 1
        self.ledger.update_job(job_key, handle=handle, state=JobState.QUEUED.value)
        # The startup clock starts when the tier accepted the job, after any submit retries.
        self._active[job_key] = _ActiveJob(
            job_key=job_key, task_ids=list(chunk), submitted_at=self._clock(), handle=handle
        )
        log.info("submitted %s (%s) with %d task(s)", job_key, handle, len(chunk))

    # polling ---------------------------------------------------------------------------------

    def _poll_job(self, job: _ActiveJob, now: float) -> None:
        try:
            status = self.tier.status(job.handle)
            lines = self.tier.read_new_lines(job.handle)
        except Exception as exc:
            failure = classify_exception(exc)
            if not failure.is_transient:
                raise PermanentFailure(failure) from exc
            if failure.retry_after is not None:
                # The service said when to come back; throttling says nothing about the job.
                job.poll_not_before = self._clock() + failure.retry_after
                if failure.code == THROTTLED:
                    return
            job.poll_errors += 1
            if job.poll_errors >= _MAX_POLL_ERRORS:
                self._fail_job(job, failure, now)
            return
        job.poll_errors = 0
        for event in parse_lines(lines):
            self._on_event(job, event, now)
        before = (job.state, job.node_started_at, job.node_released_at)
        self._note_node_times(job, status)
        if status.state is JobState.RUNNING and job.running_since is None:
            job.running_since = now
        job.state = status.state
        if (job.state, job.node_started_at, job.node_released_at) != before:
            assert self.ledger is not None
            self.ledger.update_job(
                job.job_key,
                state=status.state.value,
                node_started_at=job.node_started_at,
                node_released_at=job.node_released_at,
            )
        if status.state.terminal:
            self._on_terminal(job, status, now)
            return
        self._check_health(job, now)

    def _note_node_times(self, job: _ActiveJob, status: JobStatus) -> None:
        if status.node_started_at is not None:
            job.node_started_at = status.node_started_at
        if status.node_released_at is not None:
            job.node_released_at = status.node_released_at
        if job.node_started_at is not None:
            self._intervals[job.job_key] = NodeInterval(
                job.job_key, job.node_started_at, job.node_released_at
            )

    def _check_health(self, job: _ActiveJob, now: float) -> None:
        cfg = self.config
        if job.first_event_at is None:
            since = job.running_since if job.running_since is not None else job.submitted_at
            where = "reaching RUNNING" if job.running_since is not None else "submission"
            if now - since > cfg.startup_timeout:
                message = (
                    f"worker printed no event within {cfg.startup_timeout:.0f}s of {where} "
                    f"(job state {job.state.value}); the container probably never started"
                )
                self._fail_job(job, Failure(FailureKind.TRANSIENT, STARTUP_TIMEOUT, message), now)
            return
        assert job.last_event_at is not None
        silence = now - job.last_event_at
        if silence > cfg.stuck_after:
            message = f"no worker event for {silence:.0f}s (limit {cfg.stuck_after:.0f}s)"
            self._fail_job(job, Failure(FailureKind.TRANSIENT, STUCK, message), now)
        elif job.in_flight is not None and job.client_idle_s > cfg.stuck_after:
            message = (
                f"WAA client silent for {job.client_idle_s:.0f}s on task {job.in_flight} "
                f"(limit {cfg.stuck_after:.0f}s)"
            )
            self._fail_job(job, Failure(FailureKind.TRANSIENT, STUCK, message), now)

    def _on_event(self, job: _ActiveJob, event: WorkerEvent, now: float) -> None:
        job.last_event_at = now
        if job.first_event_at is None:
            # Any event proves the worker runs, even if the "started" line itself was lost.
            job.first_event_at = now
        job.worker = event.worker
        if event.event == "task_started":
            task_id = event.task_id
            if task_id in job.task_ids and task_id not in job.reported:
                job.in_flight, job.in_flight_since, job.client_idle_s = task_id, now, 0.0
        elif event.event == "heartbeat":
            idle = event.get("client_idle_s")
            if event.task_id is not None and event.task_id == job.in_flight:
                job.client_idle_s = float(idle) if isinstance(idle, (int, float)) else 0.0
        elif event.event == "task_result":
            self._on_task_result(job, event, now)
        elif event.event == "finished":
            job.worker_finished = True

    def _on_task_result(self, job: _ActiveJob, event: WorkerEvent, now: float) -> None:
        assert self.ledger is not None
        task_id = event.task_id
        if task_id is None or task_id not in job.task_ids or task_id in job.reported:
            log.warning(
                "ignoring result for %s from %s: not assigned or already reported",
                task_id,
                job.job_key,
            )
            return
        job.reported.add(task_id)
        started_at = job.in_flight_since if job.in_flight == task_id else None
        if job.in_flight == task_id:
            job.in_flight = None
        status = str(event.get("status"))
        error = event.get("error")
        if status == "error" and self.config.retry_task_errors:
            failure = Failure(FailureKind.TRANSIENT, TASK_ERROR, str(error or "task failed"))
            if self._charge_attempt(task_id, job, failure, now, started_at):
                self._scheduler.requeue([task_id])
                self._note_retry_record(job.job_key, job.handle, failure, now, (task_id,))
            return
        duration = event.get("duration_s")
        # The result first: a controller killed between the two writes loses an attempt row,
        # never the result.
        self._record_final(
            task_id,
            status,
            float(event.get("score", 0.0)),
            job,
            domain=event.get("domain"),
            duration_s=float(duration) if isinstance(duration, (int, float)) else None,
            error=str(error) if error else None,
        )
        self.ledger.record_attempt(
            task_id,
            job.job_key,
            outcome=status,
            ended_at=now,
            job_handle=job.handle,
            worker=job.worker,
            started_at=started_at,
            reason=str(error) if error else None,
        )
        self._breaker_success()

    def _on_terminal(self, job: _ActiveJob, status: JobStatus, now: float) -> None:
        assert self.ledger is not None
        del self._active[job.job_key]
        if job.node_started_at is not None and job.node_released_at is None:
            # The tier did not say when it gave the node back: bill up to now.
            job.node_released_at = now
            self._intervals[job.job_key] = NodeInterval(job.job_key, job.node_started_at, now)
            self.ledger.update_job(job.job_key, node_released_at=now)
        missing = job.unreported()
        if status.state is JobState.COMPLETED:
            self.ledger.update_job(job.job_key, ended_at=now)
            if missing:
                failure = Failure(
                    FailureKind.TRANSIENT,
                    WORKER_CRASH,
                    f"job completed without reporting {len(missing)} of its "
                    f"{len(job.task_ids)} task(s)",
                )
                self._requeue_unfinished(job, failure, now)
            return
        if status.state is JobState.CANCELED:
            failure = classify(
                status.error_code or JOB_CANCELED,
                status.error_message or "the job was canceled outside the engine",
            )
        else:
            failure = classify(
                status.error_code, status.error_message or "the job failed without a message"
            )
        self.ledger.update_job(
            job.job_key,
            ended_at=now,
            failure_kind=failure.kind.value,
            failure_code=failure.code,
            reason=failure.message,
        )
        if not failure.is_transient:
            raise PermanentFailure(failure)
        self._requeue_unfinished(job, failure, now)

    def _fail_job(self, job: _ActiveJob, failure: Failure, now: float) -> None:
        """A job the engine gives up on: cancel it and requeue what it did not finish."""
        assert self.ledger is not None
        log.warning("job %s: %s", job.job_key, failure.describe())
        self._cancel_job(job)
        del self._active[job.job_key]
        if job.node_started_at is not None and job.node_released_at is None:
            self._intervals[job.job_key] = NodeInterval(job.job_key, job.node_started_at, now)
        self.ledger.update_job(
            job.job_key,
            state=JobState.CANCELED.value,
            ended_at=now,
            node_released_at=job.node_released_at or (now if job.node_started_at else None),
            failure_kind=failure.kind.value,
            failure_code=failure.code,
            reason=failure.message,
        )
        self._requeue_unfinished(job, failure, now)

    def _requeue_unfinished(self, job: _ActiveJob, failure: Failure, now: float) -> None:
        """The task in flight is charged an attempt; tasks never started are requeued free."""
        requeue = []
        for task_id in job.unreported():
            if task_id == job.in_flight:
                if self._charge_attempt(task_id, job, failure, now, job.in_flight_since):
                    requeue.append(task_id)
            elif task_id not in self._final:
                requeue.append(task_id)
        self._scheduler.requeue(requeue)
        self._note_transient(job.job_key, job.handle, failure, now, tuple(requeue))

    def _charge_attempt(
        self,
        task_id: str,
        job: _ActiveJob,
        failure: Failure,
        now: float,
        started_at: float | None,
    ) -> bool:
        """Record a failed attempt; True if the task may run again, False if it is now final."""
        assert self.ledger is not None
        self.ledger.record_attempt(
            task_id,
            job.job_key,
            outcome="error",
            ended_at=now,
            job_handle=job.handle,
            worker=job.worker,
            started_at=started_at,
            failure_kind=failure.kind.value,
            failure_code=failure.code,
            reason=failure.message,
        )
        attempts = self.ledger.attempt_count(task_id)
        if attempts < self.config.max_attempts:
            return task_id not in self._final
        self._record_final(
            task_id,
            "error",
            0.0,
            job,
            error=f"gave up after {attempts} attempt(s); last: {failure.code}: {failure.message}",
        )
        return False

    def _record_final(
        self,
        task_id: str,
        status: str,
        score: float,
        job: _ActiveJob,
        *,
        domain: str | None = None,
        duration_s: float | None = None,
        error: str | None = None,
    ) -> None:
        assert self.ledger is not None
        inserted = self.ledger.record_result(
            task_id,
            status,
            score,
            domain=domain or self._domains.get(task_id),
            duration_s=duration_s,
            error=error,
            job_key=job.job_key,
            worker=job.worker,
            recorded_at=self._clock(),
        )
        if inserted:
            row = self.ledger.result(task_id)
            assert row is not None
            self._final[task_id] = row

    # failures, breaker, backoff --------------------------------------------------------------

    def _note_transient(
        self,
        job_key: str,
        handle: str | None,
        failure: Failure,
        now: float,
        requeued: tuple[str, ...],
    ) -> None:
        self._last_failure = failure
        self._note_retry_record(job_key, handle, failure, now, requeued)
        self.breaker.record_failure()
        if self.breaker.state is not BreakerState.CLOSED and self._unhealthy_since is None:
            self._unhealthy_since = now
        delay = backoff_delay(
            self.breaker.consecutive_failures,
            self.config.requeue_backoff_initial,
            self.config.requeue_backoff_max,
            self.config.requeue_backoff_jitter,
        )
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        self._hold_until = max(self._hold_until, now + delay)

    def _note_retry_record(
        self,
        job_key: str,
        handle: str | None,
        failure: Failure,
        now: float,
        requeued: tuple[str, ...],
    ) -> None:
        self._retries.append(
            RetryRecord(
                at=now,
                job_key=job_key,
                handle=handle,
                kind=failure.kind.value,
                code=failure.code,
                reason=failure.message,
                requeued_task_ids=requeued,
            )
        )

    def _breaker_success(self) -> None:
        self.breaker.record_success()
        self._unhealthy_since = None

    def _check_give_up(self, now: float) -> None:
        if self._active or self.breaker.state is BreakerState.CLOSED:
            return
        if self._unhealthy_since is None or self._scheduler.remaining == 0:
            return
        blocked = now - self._unhealthy_since
        if blocked > self.config.breaker_give_up_after:
            last = self._last_failure.describe() if self._last_failure else "unknown"
            raise TierUnhealthy(
                f"stopped: tier {self.tier.name!r} kept failing ({self.breaker.times_opened} "
                f"circuit-breaker trip(s)) and no worker has run for {blocked:.0f}s "
                f"(limit {self.config.breaker_give_up_after:.0f}s). Last failure: {last}. "
                f"{self._scheduler.remaining} task(s) are still pending in {self.ledger_path}; "
                "fix the cause and run again to resume."
            )

    # cancellation ----------------------------------------------------------------------------

    def _cancel_job(self, job: _ActiveJob) -> None:
        try:
            self.tier.cancel(job.handle)
        except Exception as exc:  # one failed cancel must not stop the others
            log.error("could not cancel %s (%s): %s", job.job_key, job.handle, _short(exc))

    def _handle_for(self, job_key: str) -> str | None:
        """The tier's name for a job it may have accepted without answering (tiers that name
        jobs after their keys say so with ``handle_for``)."""
        handle_for = getattr(self.tier, "handle_for", None)
        return handle_for(job_key) if handle_for else None

    def _cancel_by_key(self, job_key: str, reason: str) -> None:
        handle = self._handle_for(job_key)
        if handle is None or self.ledger is None:
            return
        try:
            self.tier.cancel(handle)
        except Exception as exc:  # the job may not exist: the submit never reached the tier
            log.info("no job %s to cancel: %s", handle, _short(exc))
        self.ledger.update_job(
            job_key,
            handle=handle,
            state=JobState.CANCELED.value,
            ended_at=self._clock(),
            failure_code="CancelledByEngine",
            reason=reason,
        )

    def _cancel_orphans(self, ledger: Ledger, now: float) -> None:
        """Cancel the jobs an earlier controller started and never saw end (it was killed).

        Their unfinished tasks are pending again and will be scheduled in new jobs; a job left
        running could otherwise run the same task at the same time, or record nothing after
        spending node time."""
        terminal = {state.value for state in JobState if state.terminal} | {"SUBMIT_FAILED"}
        for row in ledger.jobs():
            handle = row.handle or self._handle_for(row.job_key)
            if row.state in terminal or not handle:
                continue
            try:
                self.tier.cancel(handle)
            except Exception as exc:  # a job the tier no longer knows is not worth stopping for
                log.warning("could not cancel orphaned job %s: %s", row.handle, _short(exc))
            ledger.update_job(
                row.job_key,
                state=JobState.CANCELED.value,
                ended_at=now,
                failure_code="OrphanCancelled",
                reason="left running by an earlier controller that stopped; cancelled on resume",
            )
            log.warning("cancelled job %s left running by an earlier controller", handle)

    def _cancel_all(self, now: float, reason: str) -> None:
        assert self.ledger is not None
        for job in list(self._active.values()):
            self._cancel_job(job)
            self.ledger.update_job(
                job.job_key,
                state=JobState.CANCELED.value,
                ended_at=now,
                node_released_at=job.node_released_at or (now if job.node_started_at else None),
                failure_code="CancelledByEngine",
                reason=reason,
            )
            if job.node_started_at is not None and job.node_released_at is None:
                self._intervals[job.job_key] = NodeInterval(job.job_key, job.node_started_at, now)
            del self._active[job.job_key]

    # reporting -------------------------------------------------------------------------------

    def _cost(self, now: float, *, final: bool = False) -> CostBreakdown:
        timings = [
            TaskTiming(row.task_id, row.job_key, row.duration_s or 0.0)
            for row in self._final.values()
            if row.job_key is not None
        ]
        remaining = len(self._task_ids) - len(self._final)
        return compute_cost(
            self.config.price_per_node_hour,
            list(self._intervals.values()),
            timings,
            remaining,
            now,
            measured=self._measured_node_time(now, final),
        )

    def _measured_node_time(self, now: float, final: bool) -> NodeUsage | None:
        """The tier's measured node time, this session's added to the earlier sessions' (kept in
        the ledger, so a resumed run's cost is the whole run's)."""
        node_usage = getattr(self.tier, "node_usage", None)
        if node_usage is None or self.ledger is None:
            return None
        session = node_usage(now, final=final)
        self.ledger.record_node_seconds(self._session, session.node_seconds)
        earlier = self.ledger.node_seconds(excluding_session=self._session)
        return NodeUsage(earlier + session.node_seconds, session.nodes_held)

    def _counts(self) -> dict[str, int]:
        statuses = [row.status for row in self._final.values()]
        running = sum(1 for job in self._active.values() if job.in_flight is not None)
        total = len(self._task_ids)
        return {
            "total": total,
            "completed": len(statuses),
            "succeeded": statuses.count("success"),
            "failed": statuses.count("fail"),
            "errored": statuses.count("error"),
            "running": running,
            "pending": total - len(statuses) - running,
        }

    def _publish(self, now: float, status: str) -> None:
        counts = self._counts()
        cost = self._cost(now)
        durations = [r.duration_s for r in self._final.values() if r.duration_s is not None]
        completed = counts["completed"]
        jobs = max(1, self._jobs_submitted)
        if self.config.status_file is not None:
            write_status(
                self.config.status_file,
                DashboardSnapshot(
                    status=status,
                    timestamp=now,
                    tasks=TaskCounts(**counts),
                    performance=PerformanceFigures(
                        avg_task_duration=statistics.fmean(durations) if durations else None,
                        task_success_rate=counts["succeeded"] / completed if completed else None,
                        retry_rate=len(self._retries) / jobs if self._jobs_submitted else None,
                    ),
                    cost=CostFigures(
                        current_usd=cost.total_usd,
                        estimated_total_usd=cost.estimated_total_usd,
                        cost_per_task_usd=cost.cost_per_task_usd,
                        current_hourly_rate=cost.current_hourly_rate_usd,
                    ),
                    infrastructure=InfrastructureFigures(
                        active_workers=sum(
                            1 for j in self._active.values() if j.first_event_at is not None
                        ),
                        pending_jobs=sum(
                            1 for j in self._active.values() if j.first_event_at is None
                        ),
                    ),
                    extra={"run_id": self.run_id, "tier": self.tier.name},
                ),
            )
        if self._progress is not None:
            self._progress.update(
                ProgressCounters(
                    total=counts["total"],
                    done=completed,
                    succeeded=counts["succeeded"],
                    failed=counts["failed"],
                    errored=counts["errored"],
                    running=counts["running"],
                    retries=len(self._retries),
                    spend_usd=cost.total_usd,
                    active_jobs=len(self._active),
                )
            )

    def _result(self, started_at: float, finished_at: float) -> RunResult:
        assert self.ledger is not None
        tasks: dict[str, TaskOutcome] = {}
        for task_id in self._task_ids:
            row = self._final.get(task_id)
            if row is None:
                continue
            tasks[task_id] = TaskOutcome(
                task_id=task_id,
                domain=row.domain,
                status=row.status,
                score=row.score,
                duration_s=row.duration_s,
                error=row.error,
                attempts=self.ledger.attempt_count(task_id),
                job_key=row.job_key,
            )
        outcomes = list(tasks.values())
        durations = [o.duration_s for o in outcomes if o.duration_s is not None]
        succeeded = sum(1 for o in outcomes if o.status == "success")
        return RunResult(
            run_id=self.run_id,
            tier=self.tier.name,
            status="completed",
            total_tasks=len(self._task_ids),
            tasks=tasks,
            domains=_domain_summaries(outcomes),
            succeeded=succeeded,
            failed=sum(1 for o in outcomes if o.status == "fail"),
            errored=sum(1 for o in outcomes if o.status == "error"),
            success_rate=succeeded / len(outcomes) if outcomes else 0.0,
            mean_score=statistics.fmean([o.score for o in outcomes]) if outcomes else 0.0,
            retries=list(self._retries),
            jobs_submitted=self._jobs_submitted,
            duplicates_ignored=self.ledger.duplicates_ignored,
            started_at=started_at,
            finished_at=finished_at,
            makespan_s=finished_at - started_at,
            avg_task_duration_s=statistics.fmean(durations) if durations else None,
            cost=self._cost(finished_at, final=True),
        )


def _domain_summaries(outcomes: list[TaskOutcome]) -> dict[str, DomainSummary]:
    by_domain: dict[str, list[TaskOutcome]] = {}
    for outcome in outcomes:
        by_domain.setdefault(outcome.domain or "unknown", []).append(outcome)
    summaries = {}
    for domain, items in sorted(by_domain.items()):
        succeeded = sum(1 for o in items if o.status == "success")
        summaries[domain] = DomainSummary(
            domain=domain,
            total=len(items),
            succeeded=succeeded,
            failed=sum(1 for o in items if o.status == "fail"),
            errored=sum(1 for o in items if o.status == "error"),
            success_rate=succeeded / len(items),
            mean_score=statistics.fmean([o.score for o in items]),
        )
    return summaries


def _status_for(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled"
    if isinstance(exc, PermanentFailure):
        return "failed"
    if isinstance(exc, TierUnhealthy):
        return "stopped"
    return "crashed"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _new_run_id(now: float, rng: random.Random) -> str:
    return f"waa-{int(now)}-{rng.getrandbits(24):06x}"
