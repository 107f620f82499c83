"""The evaluation run loop, shared by every tier.

The engine hands chunks of tasks to jobs on a tier, reads the jobs' worker events, records each
task's final result in the ledger the moment it arrives, and keeps the run healthy: startup
verification, stuck detection, failure classification, retries with backoff, a circuit breaker,
and cancellation of everything it started when it is interrupted or hits a permanent failure.
The active jobs' bookkeeping and health checks are ``active_jobs``'s; what the results add up
to is ``run_summary``'s.
"""

from __future__ import annotations

import _thread
import dataclasses
import logging
import math
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils import tier_pool
from ansible_collections.openadapt.azure_eval.plugins.module_utils.active_jobs import (
    ActiveJob,
    JobBook,
    health_failure,
    short,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.budget import (
    Budget,
    BudgetReached,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.circuit_breaker import (
    BreakerState,
    CircuitBreaker,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import (
    VM_PRICES,
    CostBreakdown,
    NodeUsage,
    TaskTiming,
    compute_cost,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    JOB_CANCELED,
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
    CancelCode,
    JobRecordState,
    Ledger,
    RunStatus,
    TaskResultRow,
    TaskStatus,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.progress import (
    ProgressCounters,
    RunProgress,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.retries import (
    RetryPolicy,
    backoff_delay,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_lock import (
    ParentWatch,
    RunLock,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_summary import (
    DomainSummary,
    ResultSummary,
    RetryRecord,
    RunResult,
    TaskOutcome,
    summarize,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.scheduler import (
    Scheduler,
    make_scheduler,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.startup_checks import (
    DEFAULT_VM_BOOT_TIMEOUT_S,
    BootWatch,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.status_file import (
    CostFigures,
    DashboardSnapshot,
    InfrastructureFigures,
    PerformanceFigures,
    TaskCounts,
    write_status,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.task_order import (
    expected_durations,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    CachesStatus,
    FeedsTasks,
    FixedCapacity,
    JobState,
    JobStatus,
    MeasuresNodeTime,
    Tier,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    WorkerEvent,
    parse_lines,
)

__all__ = [
    "BudgetReached",
    "DomainSummary",
    "EngineConfig",
    "EvaluationEngine",
    "RetryRecord",
    "RunCancelled",
    "RunResult",
    "TaskOutcome",
    "TierUnhealthy",
]

log = logging.getLogger(__name__)

# The submit retry of a config that names none.
DEFAULT_SUBMIT_RETRY = RetryPolicy(
    max_attempts=4, initial_delay=2.0, max_delay=30.0, max_total_delay=90.0
)


class RunCancelled(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C or SIGTERM) after cancelling what it started."""


class TierUnhealthy(Exception):
    """The circuit breaker stayed open with nothing running for longer than allowed."""


@dataclass(frozen=True)
class EngineConfig:
    workers: int = 10
    poll_interval: float = 10.0
    startup_timeout: float = 600.0
    # WAA's Windows VM answering its probe, from the worker's vm_starting (startup_checks).
    vm_boot_timeout: float = DEFAULT_VM_BOOT_TIMEOUT_S
    stuck_after: float = 600.0
    max_attempts: int = 3
    scheduling: str = "dynamic"
    # Of the expected work, the share handed out first as one balanced job per worker (the
    # longest tasks); the rest goes out in shrinking chunks. 0: shrinking chunks from the start.
    # None: 0 on a tier with a task feed, BALANCED_HEAD on one without (see head_for).
    balanced_head: float | None = None
    # The shrinking chunks' divisor. None: 1 after a balanced head, 2 without one.
    chunk_factor: float | None = None
    max_chunk: int | None = None
    # Jobs kept queued ahead per worker on a tier that queues jobs for its nodes (AML), so a
    # node that finishes a job starts the next at once instead of waiting for the controller.
    queue_ahead: int = 1
    # Submissions made at once (each is a few round trips to the tier).
    submit_concurrency: int = 8
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
    # The part of it that names the tasks (recorded in the ledger; see Ledger.selection).
    selection_fingerprint: str = ""
    status_file: str | Path | None = None
    # Stop as on Ctrl-C when the process that started the engine dies (ansible-playbook).
    watch_parent: bool = False
    # Jobs read at once (each read is a status and a log request).
    poll_threads: int = 8
    # Alerts, node metrics and the dashboard's series (run_watch.RunWatch); None: none.
    watch: Any = None
    # A spending limit (budget.py): no new job once it would be passed.
    budget: Budget | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if self.startup_timeout <= 0 or self.stuck_after <= 0 or self.vm_boot_timeout <= 0:
            raise ValueError("startup_timeout, vm_boot_timeout and stuck_after must be positive")
        if self.poll_threads < 1:
            raise ValueError("poll_threads must be at least 1")
        if self.scheduling not in ("dynamic", "static"):
            raise ValueError("scheduling must be 'dynamic' or 'static'")
        if self.chunk_factor is not None and self.chunk_factor <= 0:
            raise ValueError("chunk_factor must be positive")
        if self.balanced_head is not None and not 0.0 <= self.balanced_head <= 1.0:
            raise ValueError("balanced_head must be between 0 and 1")
        if self.queue_ahead < 0 or self.submit_concurrency < 1:
            raise ValueError("need queue_ahead >= 0 and submit_concurrency >= 1")

    def head_for(self, feeds: bool) -> float:
        """The balanced head is there to spare job restarts (a container start each, a
        Windows VM boot on WAA). With a task feed a worker's job takes chunk after chunk
        without one, and the head's balance, made of the domains' estimates, is what loses:
        measured on three task seeds, its jobs' true lengths made the schedule 1.08-1.09 of
        the bound before any overhead on two of them (benchmarks/README.md, fifth pass)."""
        if self.balanced_head is not None:
            return self.balanced_head
        return 0.0 if feeds else BALANCED_HEAD

    def chunk_factor_for(self, feeds: bool) -> float:
        if self.chunk_factor is not None:
            return self.chunk_factor
        return TAIL_CHUNK_FACTOR if self.head_for(feeds) > 0 else DEFAULT_CHUNK_FACTOR


# A tier call that keeps failing this many polls in a row counts as a lost job.
_MAX_POLL_ERRORS = 5

# The balanced head's share of the expected work on a tier without a task feed.
BALANCED_HEAD = 0.8
# Guided self-scheduling's divisor, from the start or after a balanced head (whose short tail
# needs few restarts); chosen by replaying the benchmark's tasks (benchmarks/README.md).
DEFAULT_CHUNK_FACTOR = 2.0
TAIL_CHUNK_FACTOR = 1.0

# While work is still queued ahead, a job that is running is polled every this many rounds and
# a job waiting behind a busy node of the run every this many (and at once when a job of the
# run frees a node): neither changes when a node starts its next job. Once everything is
# handed out, every job is polled every round.
_RUNNING_POLL_ROUNDS = 4
_WAITING_POLL_ROUNDS = 10


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
        self._task_ids = [task_id for _domain, task_id in tasks]
        repeated = sorted(t for t, n in Counter(self._task_ids).items() if n > 1)
        if repeated:
            raise ValueError(f"task ids must be unique; repeated: {repeated[:5]}")
        self._domains = {task_id: domain for domain, task_id in tasks}
        self._workers = self.config.workers
        if isinstance(tier, FixedCapacity):
            self._workers = max(1, min(self._workers, tier.capacity()))
        if isinstance(tier, tier_pool.FailsOver):  # spread: every member's workers
            self._workers = tier.workers(self._workers)
        # Jobs beyond one per worker only wait in the tier's own queue when it has one; a tier
        # that starts every job at once (local processes, SSH hosts) gets one job per worker.
        # A tier with a task feed (its jobs are told where it is) hands a running job its next
        # chunk instead of a new job being started for it: one container start (and, on WAA,
        # one Windows VM boot) per worker; nothing is then queued ahead.
        self._feeds = isinstance(tier, FeedsTasks) and tier.feeds_tasks
        ahead = self.config.queue_ahead if getattr(tier, "queues_jobs", False) else 0
        if self._feeds:
            ahead = 0
        self._slots = self._workers * (1 + ahead)
        self._submit_pool: futures.ThreadPoolExecutor | None = None
        self._relaxed_polls = False
        self._submit_retries: dict[str, list[RetryRecord]] = {}
        self.breaker = CircuitBreaker(
            target=tier.name,
            failure_threshold=self.config.breaker_threshold,
            cooldown_s=self.config.breaker_cooldown,
            clock=clock,
        )
        self._book = JobBook(tier)
        self._boot = BootWatch(self.config.vm_boot_timeout)
        self._final: dict[str, TaskResultRow] = {}
        self._retries: list[RetryRecord] = []
        self._hold_until = 0.0
        self._unhealthy_since: float | None = None
        self._last_failure: Failure | None = None
        self._jobs_submitted = 0  # by this session
        self._adopted = 0  # jobs of earlier sessions this one watched
        self._poller: futures.ThreadPoolExecutor | None = None
        # The task feed's writes have threads of their own: never queued behind a hanging read.
        self._feed_writer: futures.ThreadPoolExecutor | None = None
        self._reads: dict[str, futures.Future] = {}  # job key -> its read under way
        self._run_started_at = 0.0
        self._job_seq = 0
        self._instance = ""
        self._session = 1
        self._cancelling = False
        self._controller_gone = False
        self.run_id = ""
        self.ledger: Ledger | None = None
        self._scheduler: Scheduler = make_scheduler("dynamic", [], 1)

    @property
    def _active(self) -> dict[str, ActiveJob]:
        return self._book.active

    # public ----------------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """The workers the run uses: those asked for, at most a fixed pool's hosts."""
        return self._workers

    def run(self) -> RunResult:
        """Run every task without a final result in the ledger; return when all have one.

        Raises PermanentFailure (with the hint), TierUnhealthy, RunCancelled or
        KeyboardInterrupt after cancelling every job it started.
        """
        started_at = self._clock()
        # Before anything is read, created or cancelled: a second controller stops here.
        lock = RunLock(self.ledger_path)
        lock.acquire()
        try:
            ledger = self._open_ledger(started_at)
            self._poller = futures.ThreadPoolExecutor(
                self.config.poll_threads, thread_name_prefix="engine-poll"
            )
            self._supervise(ledger, started_at)
            ledger.set_status(RunStatus.COMPLETED)
            finished_at = self._clock()
            # One figure for the status file, the last progress line and the report.
            cost = self._cost(finished_at, final=True)
            self._publish(finished_at, RunStatus.COMPLETED, cost)
            return self._result(finished_at, cost)
        finally:
            if self._poller is not None:
                # A read still hanging (a throttled call inside the SDK's own retries) is not
                # waited for: its job is closed already.
                self._poller.shutdown(wait=False, cancel_futures=True)
            if self._feed_writer is not None:
                self._feed_writer.shutdown(wait=False)
            self.close()
            lock.release()

    def _start_session(self, ledger: Ledger, now: float) -> None:
        """Take what earlier sessions left (the orphans' logs read to their end, the healthy
        ones adopted), then queue every task without a result that no adopted job holds."""
        if isinstance(self.tier, MeasuresNodeTime):
            # This session's node meter starts here: the unobserved time ends where it starts.
            self._measured_node_time(now, final=False)
        self._adopt_orphans(ledger)
        self._account_unobserved_node_time(ledger, now)
        held = {t for job in self._book.jobs() for t in job.unreported()}
        pending = [t for t in ledger.pending(self._task_ids) if t not in held]
        expected = self._expected_durations(pending)
        queue = self._queue_order(pending, expected)
        factor = self.config.chunk_factor_for(self._feeds)
        # Hook (rightsizing.py): a pool of tiers of different sizes keeps a queue per size.
        sized = self.config.scheduling == "dynamic" and tier_pool.sized_scheduler(
            self.tier, queue, self._workers, factor, self.config.max_chunk
        )
        self._scheduler = sized or make_scheduler(
            self.config.scheduling,
            queue,
            self._workers,
            factor=factor,
            max_chunk=self.config.max_chunk,
            expected=expected,
            head=self.config.head_for(self._feeds),
        )

    def _supervise(self, ledger: Ledger, started_at: float) -> None:
        previous_handler = self._install_signal_handler()
        watch = (
            ParentWatch(lambda: self._stop_for(previous_handler)).start()
            if self.config.watch_parent
            else None
        )
        if self._progress is not None:
            self._progress.start()
        try:
            self._start_session(ledger, started_at)
            self._loop()
        except BaseException as exc:
            self._cancelling = True
            status = _status_for(exc)
            self._cancel_all(self._clock(), reason=f"run {status}: {short(exc)}")
            ledger.set_status(status)
            now = self._clock()
            self._publish(now, status, self._cost(now, final=True))
            raise
        finally:
            if watch is not None:
                watch.stop()
            self._restore_signal_handler(previous_handler)
            if self._progress is not None:
                self._progress.stop()

    def _stop_for(self, signal_handler: Any) -> None:
        """The controller that started the engine is gone: stop as on Ctrl-C (cancel what the
        run started), from the main thread."""
        self._controller_gone = True
        if signal_handler is not None:
            os.kill(os.getpid(), signal.SIGTERM)  # wakes a sleep; the handler raises
        else:
            _thread.interrupt_main()

    def close(self) -> None:
        if self._submit_pool is not None:
            self._submit_pool.shutdown(wait=True)
            self._submit_pool = None
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
        meta = ledger.init_run(
            run_id, self.config.config_fingerprint, now, self.config.selection_fingerprint
        )
        self.run_id = meta.run_id
        self._instance = meta.instance
        self._session = meta.sessions
        self._job_seq = ledger.job_count()
        known = set(self._task_ids)
        self._final = {tid: row for tid, row in ledger.results().items() if tid in known}
        self._retries = [RetryRecord(**row) for row in ledger.retries()]
        self._run_started_at = meta.started_at
        self._book.attach(ledger)
        return ledger

    def _install_signal_handler(self) -> Any:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return None

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self._cancelling:
                return
            if self._controller_gone:
                raise RunCancelled("the controller that started the run is gone")
            raise RunCancelled(f"received signal {signum}")

        return signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_signal_handler(self, previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    # the loop --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            now = self._clock()
            self._feed_tail(now)
            self._fill_slots(now)
            self._check_give_up(now)
            self._watch_round(now)
            self._publish(now, RunStatus.RUNNING)
            if not self._active and self._scheduler.remaining == 0:
                return
            self._check_budget(now)
            self._sleep(self.config.poll_interval)
            self._poll_round()

    def _watch_round(self, now: float) -> None:
        """The alert rules and node metrics (run_watch): drain the jobs of unhealthy nodes."""
        if self.config.watch is None:
            return
        drains = self.config.watch.tick(
            now,
            self._book.jobs(),
            self._final.values(),
            self._retries,
            self.ledger.accepted_job_count() if self.ledger else self._jobs_submitted,
        )
        for job, failure in drains:
            if job.job_key in self._active:
                self._fail_job(job, failure, now)

    def _poll_round(self) -> None:
        """Read every job that is due, each in a thread of its own (at most ``poll_threads``
        at once), so that a slow or throttled read of one job never holds up the others: what
        has been read within a poll interval is taken now, a read still under way is taken in
        a later round, and its job is not read again meanwhile."""
        now = self._clock()
        jobs = self._book.jobs()
        self._relaxed_polls = bool(self._scheduler.remaining) and (
            self._feeds or any(self._book.waiting_for_node(job, self._workers) for job in jobs)
        )
        fresh = []
        for job in jobs:
            if job.job_key in self._reads or now < job.poll_not_before:
                continue
            if now >= job.next_poll_at:
                fresh.append(self._poller.submit(self._read_job, job.handle))
                self._reads[job.job_key] = fresh[-1]
        # A read left from an earlier round has had its wait already.
        futures.wait(fresh, timeout=self.config.poll_interval)
        for job_key, read in list(self._reads.items()):
            if not read.done():
                continue
            del self._reads[job_key]
            job = self._active.get(job_key)
            if job is not None:  # not closed while it was being read
                self._take_read(job, read)

    def _read_job(self, handle: str) -> tuple[JobStatus, list[str], float]:
        """One poll of a job (in a poller thread): its status, its new log lines, and when."""
        status = self.tier.status(handle)
        lines = self.tier.read_new_lines(handle)
        return status, lines, self._clock()

    def _expected_durations(self, pending: list[str]) -> dict[str, float]:
        """Learnt from the durations already in the ledger, else the domains' priors."""
        observed: dict[str, list[float]] = {}
        for row in self._final.values():
            if row.domain and row.duration_s:
                observed.setdefault(row.domain, []).append(row.duration_s)
        return expected_durations(pending, self._domains, observed)

    def _queue_order(self, pending: list[str], expected: dict[str, float]) -> list[str]:
        """WAA's file order for static sharding (its compatibility mode); longest expected
        first for dynamic chunking."""
        if self.config.scheduling == "static":
            return pending
        return sorted(pending, key=expected.__getitem__, reverse=True)

    def _fill_slots(self, now: float) -> None:
        """Hand chunks to free slots (one per worker, plus those queued ahead). The jobs that get
        a node now are submitted concurrently, so a round does not grow with the number of
        workers; those queued ahead one by one, in the scheduler's order."""
        if self.config.submit_concurrency == 1:
            while (chunk := self._next_chunk(now, pending=0)) is not None:
                self._submit(chunk, now)
            return
        free_nodes = max(0, self._workers - self._book.busy_slots())
        chunks: list[list[str]] = []
        while (chunk := self._next_chunk(now, pending=len(chunks))) is not None:
            chunks.append(chunk)
        # The tier's queue is first come, first served, and concurrent submits arrive in any
        # order. So the jobs that get a node now are accepted before any queued ahead is sent (the
        # balanced start's long jobs go first), and the queued ones are sent in order: a node
        # that frees takes the largest of the shrinking chunks, not a small one that overtook it
        # (measured: a 4-task job sent 8th ended the run 2 s after the rest).
        now_wave, in_order = chunks[:free_nodes], chunks[free_nodes:]
        if len(now_wave) > 1:
            self._submit_concurrently(now_wave, now)
        else:
            in_order = now_wave + in_order
        for chunk in in_order:
            self._submit(chunk, now)

    def _next_chunk(self, now: float, pending: int, feeding: bool = False) -> list[str] | None:
        """The next chunk to submit (``feeding``: to hand a running job), or None: no free slot,
        nothing left, holding back after failures, or the breaker open (a half-open breaker
        lets one trial job through, alone)."""
        if not self._scheduler.remaining:
            return None
        if not feeding and self._book.busy_slots() + pending >= self._slots:
            return None
        if feeding and self.breaker.state is not BreakerState.CLOSED:
            return None  # a half-open breaker's one trial is a new job's
        if now < self._hold_until:
            return None
        if pending and self.breaker.state is not BreakerState.CLOSED:
            return None
        if not self.breaker.allow():
            return None
        chunk: list[str] = []
        while not chunk and self._scheduler.remaining:
            handed = self._scheduler.next_chunk()
            if not handed:  # nothing that a free worker may take (right-sizing)
                break
            chunk = [t for t in handed if t not in self._final]
        if chunk and not self._budget_allows(chunk, pending, now):
            self._scheduler.requeue(chunk)
            return None
        return chunk or None

    def _budget_allows(self, chunk: list[str], pending: int, now: float) -> bool:
        """Hook (budget.py): the spend so far plus what the running jobs and this chunk are
        estimated to cost stays within the budget."""
        budget = self.config.budget
        if budget is None:
            return True
        in_flight = sum(len(job.unreported()) for job in self._book.jobs())
        first_round = self._jobs_submitted + pending < self._workers and not self._final
        return budget.allows(len(chunk), in_flight, self._cost(now), first_round)

    def _check_budget(self, now: float) -> None:
        """Stop once the budget refused work and nothing runs any more (or, when asked, as soon
        as the spend reaches it: the jobs running are then cancelled)."""
        budget = self.config.budget
        if budget is None:
            return
        if budget.must_cancel(self._cost(now)) or (budget.refused and not self._active):
            raise BudgetReached(
                budget.stop_message(self._scheduler.remaining, str(self.ledger_path))
            )

    def _submit_concurrently(self, chunks: list[list[str]], now: float) -> None:
        if self._submit_pool is None:
            self._submit_pool = futures.ThreadPoolExecutor(
                max_workers=self.config.submit_concurrency, thread_name_prefix="submit"
            )
        keys = [self._begin_submit(chunk, now) for chunk in chunks]
        calls = [
            self._submit_pool.submit(self._call_submit, key, chunk)
            for key, chunk in zip(keys, chunks, strict=True)
        ]
        errors: list[Exception] = []
        try:
            futures.wait(calls)
            for key, chunk, future in zip(keys, chunks, calls, strict=True):
                try:
                    self._end_submit(key, chunk, future.result)
                except Exception as exc:
                    errors.append(exc)
        except BaseException:
            # Interrupted while submitting or recording: any of them may have been accepted.
            futures.wait(calls, timeout=60)
            self._cancel_unrecorded(keys)
            raise
        if errors:
            raise errors[0]

    def _submit(self, chunk: list[str], now: float) -> None:
        job_key = self._begin_submit(chunk, now)
        try:
            self._end_submit(job_key, chunk, lambda: self._call_submit(job_key, chunk))
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._cancel_unrecorded([job_key])
            raise

    def _cancel_unrecorded(self, job_keys: list[str]) -> None:
        """After an interrupt inside a submit: cancel the jobs the tier may have accepted that
        are not active jobs yet (the active ones are cancelled with the rest of the run)."""
        for key in job_keys:
            if key not in self._book.active:
                self._cancel_by_key(key, "interrupted while submitting")

    def _begin_submit(self, chunk: list[str], now: float) -> str:
        if self.ledger is None:
            raise RuntimeError("the engine's ledger is not open")
        self._job_seq += 1
        job_key = "-".join(p for p in (self.run_id, self._instance, f"{self._job_seq:04d}") if p)
        # Recorded before submitting so that a controller killed mid-submit leaves a trace.
        self.ledger.record_job_submitted(job_key, None, chunk, now)
        return job_key

    def _call_submit(self, job_key: str, chunk: list[str]) -> tuple[str, float, float]:
        """The tier's submit with its retries: the handle, when the accepted attempt was sent
        and when the tier answered; may run on a submit thread (no ledger here)."""

        def on_retry(attempt: int, failure: Failure, delay: float) -> None:
            # Recorded in the ledger by _end_submit, on the loop's thread.
            self._submit_retries.setdefault(job_key, []).append(
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

        retrier = (self.config.submit_retry or DEFAULT_SUBMIT_RETRY).with_hooks(
            sleep=self._sleep, on_retry=on_retry, codes=self.tier.failure_codes
        )
        sent: list[float] = []

        def send(key: str, ids: list[str]) -> str:
            sent[:] = [self._clock()]
            return self.tier.submit(key, ids)

        handle = retrier.call(send, job_key, list(chunk))
        return handle, sent[0], self._clock()

    def _end_submit(
        self, job_key: str, chunk: list[str], outcome: Callable[[], tuple[str, float, float]]
    ) -> None:
        """Record what the submit came to: an active job, or a failed submit requeued."""
        if self.ledger is None:
            raise RuntimeError("the engine's ledger is not open")
        try:
            handle, sent_at, accepted_at = outcome()
        except BaseException as exc:
            self._record_submit_retries(job_key)
            if not isinstance(exc, Exception):
                raise  # interrupted inside the submit: the caller cancels it by its key
            failure = self._classify_exception(exc)
            self.ledger.update_job(
                job_key,
                state=JobRecordState.SUBMIT_FAILED,
                ended_at=self._clock(),
                failure_kind=failure.kind.value,
                failure_code=failure.code,
                reason=failure.message,
            )
            self._scheduler.requeue(chunk)
            if not failure.is_transient and not self._moves_on(job_key, None, failure):
                raise PermanentFailure(failure) from exc
            self._note_transient(job_key, None, failure, self._clock(), tuple(chunk))
            return
        # An active job first: an interrupt from here on cancels it with the rest of the run.
        # The startup clock starts when the tier accepted the job, after any submit retries
        # (not when the round's other submits were done).
        self._book.add(
            ActiveJob(
                job_key=job_key,
                task_ids=list(chunk),
                submitted_at=accepted_at,
                handle=handle,
                startup_from=accepted_at,
                sent_at=sent_at,
            )
        )
        self._record_submit_retries(job_key)
        self._jobs_submitted += 1
        self.ledger.update_job(job_key, handle=handle, state=JobState.QUEUED)
        log.info("submitted %s (%s) with %d task(s)", job_key, handle, len(chunk))

    def _record_submit_retries(self, job_key: str) -> None:
        for record in self._submit_retries.pop(job_key, []):
            self._add_retry(record)

    def _classify_exception(self, exc: BaseException) -> Failure:
        return classify_exception(exc, codes=self.tier.failure_codes)

    # polling ---------------------------------------------------------------------------------

    def _take_read(self, job: ActiveJob, read: futures.Future) -> None:
        now = self._clock()
        try:
            status, lines, read_at = read.result()
        except Exception as exc:
            failure = self._classify_exception(exc)
            if not failure.is_transient and not self._moves_on(job.job_key, job.handle, failure):
                raise PermanentFailure(failure) from exc
            if not failure.is_transient:
                self._fail_job(job, failure, now)
                return
            if failure.retry_after is not None:
                # The service said when to come back; throttling says nothing about the job.
                job.poll_not_before = self._clock() + failure.retry_after
                if failure.code == THROTTLED:
                    return
            job.poll_errors += 1
            if job.poll_errors >= _MAX_POLL_ERRORS:
                self._fail_job(job, failure, now)
            return
        self._take_poll(job, status, lines, read_at)

    def _take_poll(self, job: ActiveJob, status: JobStatus, lines: list[str], now: float) -> None:
        """What one successful poll of a job read, taken at ``now`` (when it was read)."""
        job.poll_errors = 0
        for event in parse_lines(lines):
            self._on_event(job, event, now)
        self._book.note_status(job, status, now)
        boot_failure = self._boot.failure(job.job_key, now)
        if boot_failure is not None:
            if not boot_failure.is_transient:
                raise PermanentFailure(boot_failure)
            self._fail_job(job, boot_failure, now)
            return
        if status.state.terminal:
            self._on_terminal(job, status, now)
            return
        waiting = self._book.waiting_for_node(job, self._workers)
        if waiting:
            # Queued behind a busy node of this run: the container has had no chance to start.
            job.startup_from = now
        self._schedule_next_poll(job, now, waiting)
        job.next_poll_at = self._boot.poll_by(job.job_key, job.next_poll_at)
        failure = health_failure(
            job,
            now,
            startup_timeout=self.config.startup_timeout,
            stuck_after=self.config.stuck_after,
        )
        if failure is None:
            job.confirming = False
        elif failure.code == STUCK and isinstance(self.tier, CachesStatus) and not job.confirming:
            # The job may have ended (preempted, failed) since the tier last read its status.
            # (A startup verdict stands: its limit is kept to within one poll; a job that never
            # printed is requeued free whatever ended it.)
            job.confirming = True
            self.tier.expire_status(job.handle)
            job.next_poll_at = 0.0
        else:
            self._fail_job(job, failure, now)

    def _schedule_next_poll(self, job: ActiveJob, now: float, waiting: bool) -> None:
        if not self._relaxed_polls:
            job.next_poll_at = 0.0  # the tail, or nothing queued ahead: every round
            return
        if waiting:
            # Its startup clock moves on at each of these polls: a few of them per limit.
            wait = min(
                (_WAITING_POLL_ROUNDS - 1) * self.config.poll_interval,
                self.config.startup_timeout / 4,
            )
        elif job.first_event_at is not None and not job.worker_finished and not self._feed_due(job):
            wait = min(
                (_RUNNING_POLL_ROUNDS - 1) * self.config.poll_interval, self.config.stuck_after / 4
            )
        else:
            wait = 0.0
        job.next_poll_at = now + wait

    def _wake_waiting(self) -> None:
        """A job of the run freed its node: the jobs queued behind it are polled next round."""
        for job in self._book.jobs():
            if job.first_event_at is None:
                job.next_poll_at = 0.0

    def _on_event(self, job: ActiveJob, event: WorkerEvent, read_at: float) -> None:
        now = _event_time(event, job, read_at)
        job.last_event_at = now
        if job.first_event_at is None:
            # Any event proves the worker runs, even if the "started" line itself was lost.
            job.first_event_at = now
        job.worker = event.worker
        if self._boot.take(job.job_key, event, now):
            return
        if event.event == "task_started":
            task_id = event.task_id
            if task_id in job.task_ids and task_id not in job.reported:
                job.in_flight, job.in_flight_since, job.client_idle_s = task_id, now, 0.0
            self._feed_ahead(job, now)
        elif event.event == "tasks_added":
            seq = event.get("seq")
            if isinstance(seq, int):
                job.offers_taken = max(job.offers_taken, seq)
        elif event.event == "awaiting":
            seq = event.get("seq")
            if isinstance(seq, int):
                self._answer_awaiting(job, seq, now)
        elif event.event == "feed_error":
            # The job ends after its tasks; what was written for it and not taken is requeued.
            log.warning("job %s cannot read its task feed: %s", job.job_key, event.get("message"))
        elif event.event == "heartbeat":
            idle = event.get("client_idle_s")
            if event.task_id is not None and event.task_id == job.in_flight:
                job.client_idle_s = float(idle) if isinstance(idle, (int, float)) else 0.0
        elif event.event == "task_result":
            self._on_task_result(job, event, now)
        elif event.event == "finished":
            job.worker_finished = True
            self._wake_waiting()
        elif event.event == "failed":
            # The worker cannot run its tasks (a secret it may not read, or that is missing): a
            # permanent code stops the run with the worker's message; a transient one is left to
            # the job's own failure.
            failure = classify(
                str(event.get("code")), str(event.get("message")), codes=self.tier.failure_codes
            )
            if not failure.is_transient:
                raise PermanentFailure(failure)

    # the task feed ----------------------------------------------------------------------------

    def _feed_due(self, job: ActiveJob) -> bool:
        """A job of a task feed with one task or none left to start: its last task's start
        (when its next entry is written) or its ask comes soon, so it is polled every round."""
        return self._feeds and not job.feed_closed and len(job.unstarted()) <= 1

    def _feed_ahead(self, job: ActiveJob, now: float) -> None:
        """At the start of a job's last task, while plenty is left (more tasks than workers),
        write its next chunk unless an entry is waiting already, so that its node goes on
        without a gap. Not sooner: a chunk written ahead of two tasks was one of the larger
        chunks, taken by a node that frees later than those which then find less to do
        (measured: the last job ended 3 s after most). The tail is ``_feed_tail``'s."""
        if not self._feeds or job.feed_closed or job.entry_waiting:
            return
        if not job.unstarted() and self._scheduler.remaining > self._workers:
            self._offer(job, len(job.offers) + 1, now)

    def _feed_tail(self, now: float) -> None:
        """Each round once no more tasks are left than workers, the jobs that will ask next
        (every task they hold started, no entry waiting) get their entry without the ask's
        round trip (the ask read at a poll, the entry written, then read), which costs a short
        tail task's length: an empty entry once nothing is left, so that their workers stop at
        once, and the next chunk to each of them expected to free among the first as many jobs
        as there are tasks left, which would have got one by asking anyway. The others ask
        (``awaiting``): whoever asks first is answered first."""
        remaining = self._scheduler.remaining
        if not self._feeds or remaining > self._workers:
            return
        if remaining and (now < self._hold_until or self.breaker.state is not BreakerState.CLOSED):
            return  # held back after failures: no chunk now, and an empty entry would end a job
        asking = [
            j
            for j in self._book.jobs()
            if not j.feed_closed and not j.unstarted() and not j.entry_waiting
        ]
        if not asking:
            return
        if remaining:
            free_at = self._expected_free_at(now)
            if not free_at:
                return  # no estimates: whoever asks first
            asking.sort(key=lambda j: free_at.get(j.job_key, math.inf))
            picked = []
            for job in asking:
                mine = free_at.pop(job.job_key, math.inf)
                earlier = sum(1 for at in free_at.values() if at < mine)
                if earlier >= self._scheduler.remaining - len(picked):
                    break
                picked.append(job)
            asking = picked
        self._offer_each(asking, now)

    def _expected_free_at(self, now: float) -> dict[str, float]:
        """When each job of the feed that can take more tasks (its feed open, no entry
        waiting) is expected to have run all it holds: its task under way to its expected end
        (now at the earliest), then the tasks not started, in the seconds learnt from the
        results so far. Empty before any result, when there is nothing to learn from."""
        jobs = [j for j in self._book.jobs() if not j.feed_closed and not j.entry_waiting]
        if not any(row.duration_s for row in self._final.values()):
            return {}
        expected = self._expected_durations([t for j in jobs for t in j.unreported()])
        free_at = {}
        for job in jobs:
            at = now
            if job.in_flight is not None and job.in_flight_since is not None:
                at = max(now, job.in_flight_since + expected[job.in_flight])
            free_at[job.job_key] = at + sum(expected[t] for t in job.unstarted())
        return free_at

    def _answer_awaiting(self, job: ActiveJob, seq: int, now: float) -> None:
        if seq == len(job.offers) + 1:
            self._offer(job, seq, now)
        elif seq <= len(job.offers) and job.adopted_at is not None:
            # An earlier controller recorded the entry and may have died before writing it.
            self._write_offer(job, seq)

    def _offer(self, job: ActiveJob, seq: int, now: float) -> None:
        """Hand a running job its next chunk through its feed (nothing left: an empty entry)."""
        if self._record_offer(job, seq, now):
            self._write_offer(job, seq)

    def _offer_each(self, jobs: list[ActiveJob], now: float) -> None:
        """``_offer`` to each job its next entry, the writes concurrently (at most
        ``poll_threads`` at once, in threads apart from the reads'), so that a round does not
        grow with the jobs fed."""
        recorded = [job for job in jobs if self._record_offer(job, len(job.offers) + 1, now)]
        if len(recorded) <= 1:
            for job in recorded:
                self._write_offer(job, len(job.offers))
            return
        if self._feed_writer is None:
            self._feed_writer = futures.ThreadPoolExecutor(
                self.config.poll_threads, thread_name_prefix="engine-feed"
            )
        futures.wait(
            [self._feed_writer.submit(self._write_offer, j, len(j.offers)) for j in recorded]
        )

    def _record_offer(self, job: ActiveJob, seq: int, now: float) -> bool:
        """The job's entry ``seq`` taken from the scheduler and recorded in the ledger, before
        it is written, so that a controller killed in between loses nothing. False once the
        run is being cancelled."""
        if self.ledger is None:
            raise AssertionError("self.ledger is not set")
        if self._cancelling:
            return False
        chunk = self._next_chunk(now, pending=0, feeding=True) or []
        self.ledger.record_offer(job.job_key, seq, chunk)
        job.offers.append(chunk)
        job.task_ids.extend(chunk)
        if chunk:
            log.info("handed %s %d more task(s) (entry %d)", job.job_key, len(chunk), seq)
        return True

    def _write_offer(self, job: ActiveJob, seq: int) -> None:
        try:
            self.tier.offer(job.handle, seq, job.offers[seq - 1])  # type: ignore[attr-defined]
        except Exception as exc:
            # The worker stops waiting for the entry after a while and its job completes;
            # the tasks it never took are then requeued, free.
            log.warning(
                "could not write entry %d of %s's task feed: %s", seq, job.job_key, short(exc)
            )

    def _on_task_result(self, job: ActiveJob, event: WorkerEvent, now: float) -> None:
        if self.ledger is None:
            raise AssertionError("self.ledger is not set")
        task_id = event.task_id
        if task_id is not None and task_id in job.reported:
            # Read again from an adopted job's log (taken by an earlier session).
            log.debug("result for %s from %s already taken", task_id, job.job_key)
            return
        if task_id is None or task_id not in job.task_ids:
            log.warning("ignoring result for %s from %s: not assigned", task_id, job.job_key)
            return
        job.reported.add(task_id)
        started_at = job.in_flight_since if job.in_flight == task_id else None
        if job.in_flight == task_id:
            job.in_flight = None
        status = str(event.get("status"))
        error = event.get("error")
        if status == TaskStatus.ERROR and self.config.retry_task_errors:
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

    def _on_terminal(self, job: ActiveJob, status: JobStatus, now: float) -> None:
        self._wake_waiting()
        missing = job.unreported()
        if status.state is JobState.COMPLETED:
            self._book.close_job(job.job_key, now, cancel=False)
            untaken = job.untaken()
            if untaken:
                # Written to its feed after the worker stopped waiting: never started, so free.
                self._scheduler.requeue([t for t in untaken if t not in self._final])
                missing = [t for t in missing if t not in untaken]
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
            code = status.error_code or JOB_CANCELED
            message = status.error_message or "the job was canceled outside the engine"
        else:
            code = status.error_code
            message = status.error_message or "the job failed without a message"
        failure = classify(code, message, codes=self.tier.failure_codes)
        self._book.close_job(job.job_key, now, cancel=False, failure=failure)
        if not failure.is_transient and not self._moves_on(job.job_key, job.handle, failure):
            raise PermanentFailure(failure)
        self._requeue_unfinished(job, failure, now)

    def _fail_job(self, job: ActiveJob, failure: Failure, now: float) -> None:
        """A job the engine gives up on: cancel it and requeue what it did not finish."""
        log.warning("job %s: %s", job.job_key, failure.describe())
        if self.config.watch is not None:
            self.config.watch.job_given_up(job, failure, now)
        self._book.close_job(
            job.job_key, now, cancel=True, state=JobState.CANCELED, failure=failure
        )
        self._requeue_unfinished(job, failure, now)

    def _requeue_unfinished(self, job: ActiveJob, failure: Failure, now: float) -> None:
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
        job: ActiveJob,
        failure: Failure,
        now: float,
        started_at: float | None,
    ) -> bool:
        """Record a failed attempt; True if the task may run again, False if it is now final."""
        if self.ledger is None:
            raise AssertionError("self.ledger is not set")
        self.ledger.record_attempt(
            task_id,
            job.job_key,
            outcome=TaskStatus.ERROR.value,
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
            TaskStatus.ERROR.value,
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
        job: ActiveJob,
        *,
        domain: str | None = None,
        duration_s: float | None = None,
        error: str | None = None,
    ) -> None:
        if self.ledger is None:
            raise AssertionError("self.ledger is not set")
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
            if row is None:
                raise AssertionError("row is not set")
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
        if self._moves_on(job_key, handle, failure):
            # A pool took the failing tier out: the next one starts with a clean slate.
            self._breaker_success()
            self._hold_until = now
            return
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

    def _moves_on(self, job_key: str, handle: str | None, failure: Failure) -> bool:
        """Hook (tier_pool.py): a pool of tiers takes the failing tier out and another takes
        the work, so the failure neither stops the run nor counts on the breaker."""
        return tier_pool.moves_on(self.tier, job_key, handle, failure)

    def _note_retry_record(
        self,
        job_key: str,
        handle: str | None,
        failure: Failure,
        now: float,
        requeued: tuple[str, ...],
    ) -> None:
        self._add_retry(
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

    def _add_retry(self, record: RetryRecord) -> None:
        """Kept in the ledger too, so that a resumed run reports the retries of all sessions."""
        self._retries.append(record)
        if self.ledger is None:
            raise AssertionError("self.ledger is not set")
        self.ledger.record_retry(**dataclasses.asdict(record))

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

    def _cancel_by_key(self, job_key: str, reason: str) -> None:
        """Cancel a job the tier may have accepted without answering (tiers that name jobs
        after their keys can tell its handle)."""
        handle = self.tier.handle_for(job_key)
        if handle is None or self.ledger is None:
            return
        self._book.close_job(
            job_key,
            self._clock(),
            cancel=True,
            handle=handle,
            state=JobState.CANCELED,
            failure_code=CancelCode.BY_ENGINE,
            reason=reason,
        )

    def _account_unobserved_node_time(self, ledger: Ledger, now: float) -> None:
        """The node time between the last sample of the previous session and this one's
        first, at ``now`` (the controller was killed, or the run stopped and was started again
        later), estimated from the jobs' node intervals read on adoption."""
        if not isinstance(self.tier, MeasuresNodeTime):
            return
        last = ledger.last_node_sample(before_session=self._session)
        if last is None:
            return
        since, nodes = last
        jobs = [i for i in self._book.intervals.values() if (i.released_at or now) > since]
        seconds = self.tier.unobserved_node_seconds(since, now, nodes, jobs)
        ledger.record_unobserved_node_seconds(self._session, seconds)
        log.info("node time while no controller watched (%.0fs): %.0f node-s", now - since, seconds)

    def _adopt_orphans(self, ledger: Ledger) -> None:
        """The jobs an earlier controller started and never saw end (it was killed): each one's
        log is read to its end first and every task result in it taken into the ledger (once:
        what the earlier session took is not taken again). A job that ended is closed; one still
        running is adopted and watched like this session's own jobs, so a healthy one finishes
        its tasks and an unhealthy one is cancelled by the health checks. A job the tier no
        longer knows is cancelled (``OrphanCancelled``) and its tasks are scheduled again."""
        for row in self._book.unfinished_rows():
            handle = row.handle or self.tier.handle_for(row.job_key)
            if not handle:
                continue
            taken = {a.task_id for a in ledger.attempts() if a.job_key == row.job_key}
            job = ActiveJob(
                job_key=row.job_key,
                task_ids=list(row.task_ids),
                submitted_at=row.submitted_at,
                handle=handle,
                node_started_at=row.node_started_at,
                reported=taken | {t for t in row.task_ids if t in self._final},
                adopted_at=self._clock(),
                offers=ledger.offers(row.job_key),
            )
            try:
                status = self.tier.status(handle)
                lines = self.tier.read_new_lines(handle)
            except Exception as exc:
                self._book.close_job(
                    row.job_key,
                    self._clock(),
                    cancel=True,
                    handle=handle,
                    state=JobState.CANCELED,
                    failure_code=CancelCode.ORPHAN,
                    reason="left by an earlier controller that stopped and no longer readable "
                    f"({short(exc)}); cancelled on resume",
                )
                log.warning("cancelled job %s left by an earlier controller", handle)
                continue
            self._book.add(job)
            self._adopted += 1
            log.warning(
                "adopted job %s left by an earlier controller (%s)", handle, status.state.value
            )
            self._take_poll(job, status, lines, self._clock())

    def _cancel_all(self, now: float, reason: str) -> None:
        for job in self._book.jobs():
            self._book.close_job(
                job.job_key,
                now,
                cancel=True,
                state=JobState.CANCELED,
                failure_code=CancelCode.BY_ENGINE,
                reason=reason,
            )

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
            list(self._book.intervals.values()),
            timings,
            remaining,
            now,
            measured=self._measured_node_time(now, final),
        )

    def _measured_node_time(self, now: float, final: bool) -> NodeUsage | None:
        """The tier's measured node time, this session's added to the earlier sessions' (kept in
        the ledger, so a resumed run's cost is the whole run's)."""
        if not isinstance(self.tier, MeasuresNodeTime) or self.ledger is None:
            return None
        session = self.tier.node_usage(now, final=final)
        # What is still to come is billed in this figure but not recorded: a later session
        # accounts the time after this one itself.
        self.ledger.record_node_seconds(self._session, session.node_seconds - session.still_to_come)
        self.ledger.record_node_sample(self._session, now, session.nodes_held)
        earlier = self.ledger.node_seconds(excluding_session=self._session)
        return NodeUsage(earlier + session.node_seconds, session.nodes_held)

    def _summary(self, *, with_attempts: bool = False) -> ResultSummary:
        attempts = self.ledger.attempt_count if with_attempts and self.ledger else (lambda _: 0)
        return summarize(self._task_ids, self._final, attempts)

    def _publish(self, now: float, status: str, cost: CostBreakdown | None = None) -> None:
        summary = self._summary()
        cost = cost or self._cost(now)
        running = sum(1 for job in self._active.values() if job.in_flight is not None)
        jobs = max(1, self._jobs_submitted)
        if self.config.status_file is not None:
            write_status(
                self.config.status_file,
                DashboardSnapshot(
                    status=str(status),
                    timestamp=now,
                    tasks=TaskCounts(
                        total=summary.total,
                        completed=summary.completed,
                        succeeded=summary.succeeded,
                        failed=summary.failed,
                        errored=summary.errored,
                        running=running,
                        pending=summary.total - summary.completed - running,
                    ),
                    performance=PerformanceFigures(
                        avg_task_duration=summary.avg_task_duration_s,
                        task_success_rate=summary.success_rate,
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
                    extra={
                        "run_id": self.run_id,
                        "tier": self.tier.name,
                        **self._watch_status(now, summary.completed, cost.total_usd),
                        **tier_pool.status_extra(self.tier),
                        **(self.config.budget.status() if self.config.budget else {}),
                    },
                ),
            )
        if self._progress is not None:
            self._progress.update(
                ProgressCounters(
                    total=summary.total,
                    done=summary.completed,
                    succeeded=summary.succeeded,
                    failed=summary.failed,
                    errored=summary.errored,
                    running=running,
                    retries=len(self._retries),
                    spend_usd=cost.total_usd,
                    active_jobs=len(self._active),
                )
            )

    def _watch_status(self, now: float, done: int, cost_usd: float) -> dict[str, Any]:
        if self.config.watch is None:
            return {}
        return self.config.watch.status(
            now,
            ledger=self.ledger,
            active_jobs=self._book.jobs(),
            done=done,
            cost_usd=cost_usd,
            started_at=self._run_started_at,
            workers=self._workers,
        )

    def _result(self, finished_at: float, cost: CostBreakdown) -> RunResult:
        """The whole run's, across its sessions."""
        if self.ledger is None:
            raise AssertionError("self.ledger is not set")
        summary = self._summary(with_attempts=True)
        last_result = max((row.recorded_at for row in self._final.values()), default=finished_at)
        # A session with nothing left to do (the run was complete) does not stretch the span.
        ended_at = finished_at if self._jobs_submitted or self._adopted else last_result
        return RunResult(
            run_id=self.run_id,
            tier=self.tier.name,
            status=RunStatus.COMPLETED.value,
            total_tasks=summary.total,
            tasks=summary.tasks,
            domains=summary.domains,
            succeeded=summary.succeeded,
            failed=summary.failed,
            errored=summary.errored,
            success_rate=summary.success_rate or 0.0,
            mean_score=summary.mean_score,
            retries=list(self._retries),
            jobs_submitted=self.ledger.accepted_job_count(),
            duplicates_ignored=self.ledger.duplicates_ignored,
            started_at=self._run_started_at,
            finished_at=ended_at,
            makespan_s=max(0.0, ended_at - self._run_started_at),
            avg_task_duration_s=summary.avg_task_duration_s,
            cost=cost,
            sessions=self._session,
            session_jobs_submitted=self._jobs_submitted,
            boot=self._boot.report(),
        )


def _status_for(exc: BaseException) -> RunStatus:
    if isinstance(exc, KeyboardInterrupt):
        return RunStatus.CANCELLED
    if isinstance(exc, PermanentFailure):
        return RunStatus.FAILED
    if isinstance(exc, TierUnhealthy | BudgetReached):
        return RunStatus.STOPPED
    return RunStatus.CRASHED


def _event_time(event: WorkerEvent, job: ActiveJob, read_at: float) -> float:
    """When an event happened: the worker's own time when it is plausible (after the job was
    submitted, not after it was read), else the time it was read."""
    ts = event.get("ts")
    if isinstance(ts, (int, float)) and job.submitted_at <= ts <= read_at:
        return float(ts)
    return read_at


def _new_run_id(now: float, rng: random.Random) -> str:
    return f"waa-{int(now)}-{rng.getrandbits(24):06x}"
