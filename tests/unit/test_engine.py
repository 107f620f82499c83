"""The engine's logic against a scripted tier on a fake clock (no processes, no sleeping).

End-to-end runs through real worker processes are in test_engine_local.py.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (
    EngineConfig,
    EvaluationEngine,
    RunCancelled,
    TierUnhealthy,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    PermanentFailure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (
    Ledger,
    LedgerMismatch,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.status_file import read_status
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    BaseTier,
    JobState,
    JobStatus,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    format_event,
)

TASKS = [("chrome", f"c{i}") for i in range(4)] + [("vlc", f"v{i}") for i in range(4)]
IDS = [t for _, t in TASKS]


class Clock:
    def __init__(self, start=1_000_000.0):
        self.now = start
        self.on_sleep = None

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.now)


@dataclass
class Plan:
    """What a scripted job does, in seconds after submission."""

    lines: list[tuple[float, str]] = field(default_factory=list)
    running_at: float | None = 2.0
    end_at: float | None = None
    end_state: JobState = JobState.COMPLETED
    error_code: str | None = None
    error_message: str | None = None


def worker_plan(
    job_key,
    task_ids,
    task_s=60.0,
    start=5.0,
    statuses=None,
    stop_after=None,
    heartbeat=None,
    client_idle=None,
):
    """A well-behaved worker: started, then each task; ``stop_after`` tasks then silence."""
    statuses = statuses or {}
    t = start
    lines = [(t, format_event("started", job_key, ts=t, task_ids=task_ids))]
    for index, task_id in enumerate(task_ids):
        lines.append((t, format_event("task_started", job_key, ts=t, task_id=task_id)))
        if stop_after is not None and index >= stop_after:
            if heartbeat:
                beat = t + heartbeat
                while beat < t + 10_000:
                    idle = (beat - t) if client_idle else 0.0
                    lines.append(
                        (
                            beat,
                            format_event(
                                "heartbeat", job_key, ts=beat, task_id=task_id, client_idle_s=idle
                            ),
                        )
                    )
                    beat += heartbeat
            return Plan(lines=lines)
        t += task_s
        status = statuses.get(task_id, "success")
        lines.append(
            (
                t,
                format_event(
                    "task_result",
                    job_key,
                    ts=t,
                    task_id=task_id,
                    domain=None,
                    status=status,
                    score=1.0 if status == "success" else 0.0,
                    duration_s=task_s,
                    error="client exploded" if status == "error" else None,
                ),
            )
        )
    lines.append((t, format_event("finished", job_key, ts=t, completed=len(task_ids))))
    return Plan(lines=lines, end_at=t + 1)


class ScriptedTier(BaseTier):
    name = "scripted"

    def __init__(self, clock, planner):
        self.clock = clock
        self.planner = planner
        self.jobs = {}
        self.submits = []
        self.cancelled = []
        self.submit_errors = []

    def submit(self, job_key, task_ids):
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        handle = f"h-{len(self.submits) + 1}"
        self.submits.append((job_key, list(task_ids), self.clock()))
        plan = self.planner(job_key, list(task_ids), len(self.submits))
        self.jobs[handle] = {"plan": plan, "t0": self.clock(), "read": 0, "cancelled_at": None}
        return handle

    def _age(self, job):
        return self.clock() - job["t0"]

    def status(self, handle):
        job = self.jobs[handle]
        plan, t0 = job["plan"], job["t0"]
        if job["cancelled_at"] is not None:
            return JobStatus(
                JobState.CANCELED, node_started_at=t0, node_released_at=job["cancelled_at"]
            )
        age = self._age(job)
        if plan.end_at is not None and age >= plan.end_at:
            return JobStatus(
                plan.end_state, plan.error_code, plan.error_message, t0, t0 + plan.end_at
            )
        if plan.running_at is not None and age >= plan.running_at:
            return JobStatus(JobState.RUNNING, node_started_at=t0)
        return JobStatus(JobState.QUEUED)

    def read_new_lines(self, handle):
        job = self.jobs[handle]
        if job["cancelled_at"] is not None:
            return []
        visible = [line for at, line in job["plan"].lines if at <= self._age(job)]
        new = visible[job["read"] :]
        job["read"] = len(visible)
        return new

    def cancel(self, handle):
        self.cancelled.append(handle)
        if self.jobs[handle]["cancelled_at"] is None:
            self.jobs[handle]["cancelled_at"] = self.clock()

    def tasks_submitted(self):
        return [t for _, ids, _ in self.submits for t in ids]


class HttpError(Exception):
    def __init__(self, status_code, message, headers=None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.response = type("Response", (), {"headers": headers or {}})()


def make_engine(tmp_path, planner, tasks=TASKS, clock=None, **config):
    clock = clock or Clock()
    tier = ScriptedTier(clock, planner)
    defaults = dict(
        workers=2,
        poll_interval=10,
        startup_timeout=300,
        stuck_after=600,
        max_attempts=3,
        requeue_backoff_initial=5,
        requeue_backoff_jitter=0,
        breaker_threshold=3,
        breaker_cooldown=120,
        breaker_give_up_after=900,
        status_file=tmp_path / "status.json",
        run_id="run",
        # One submit at a time: the scripted tier's jobs are numbered in submission order.
        submit_concurrency=1,
    )
    defaults.update(config)
    engine = EvaluationEngine(
        tier,
        tasks,
        tmp_path / "ledger.db",
        EngineConfig(**defaults),
        clock=clock,
        sleep=clock.sleep,
        handle_signals=False,
    )
    return engine, tier, clock


def ledger_rows(tmp_path):
    with Ledger(tmp_path / "ledger.db") as ledger:
        return ledger.results(), ledger.jobs(), ledger.attempts(), ledger.run_meta()


def test_every_task_recorded_once_with_summary_cost_and_dashboard(tmp_path):
    outcomes = {"c1": "fail", "v2": "fail"}
    engine, tier, clock = make_engine(
        tmp_path,
        lambda key, ids, n: worker_plan(key, ids, statuses=outcomes),
        price_per_node_hour=3.6,
    )
    result = engine.run()
    results, jobs, _, meta = ledger_rows(tmp_path)
    assert sorted(results) == sorted(IDS)
    assert sorted(tier.tasks_submitted()) == sorted(IDS)  # nothing ran twice
    assert result.succeeded == 6 and result.failed == 2 and result.errored == 0
    assert result.success_rate == pytest.approx(0.75)
    assert result.domains["chrome"].succeeded == 3 and result.domains["vlc"].failed == 1
    assert result.tasks["c1"].status == "fail" and result.tasks["c1"].domain == "chrome"
    assert result.retries == [] and result.duplicates_ignored == 0
    assert meta.status == "completed"
    assert all(j.state == "COMPLETED" for j in jobs)
    # Node time (submit .. end) of every job is billed at 0.001 USD/s.
    node_seconds = sum(j.node_released_at - j.node_started_at for j in jobs)
    assert result.cost.total_usd == pytest.approx(node_seconds * 0.001)
    assert sum(result.cost.task_costs_usd.values()) == pytest.approx(result.cost.total_usd)
    status = read_status(tmp_path / "status.json")
    assert status["status"] == "completed"
    assert status["tasks"]["completed"] == 8 and status["tasks"]["pending"] == 0
    assert status["cost"]["current_usd"] == pytest.approx(result.cost.total_usd, abs=1e-4)
    assert status["performance"]["task_success_rate"] == 0.75


def test_dynamic_chunks_shrink_and_static_gives_one_shard_per_worker(tmp_path):
    def plan(key, ids, n):
        return worker_plan(key, ids)

    engine, tier, _ = make_engine(tmp_path / "d", plan, workers=2, balanced_head=0.0)
    engine.run()
    assert [len(ids) for _, ids, _ in tier.submits][:3] == [2, 2, 1]
    engine, tier, _ = make_engine(tmp_path / "s", plan, workers=2, scheduling="static")
    engine.run()
    assert [ids for _, ids, _ in tier.submits] == [IDS[:4], IDS[4:]]


def test_dynamic_makespan_beats_static_on_a_skewed_set(tmp_path):
    slow = {"c0", "c1", "c2", "c3"}

    def plan(key, ids, n):
        plan = worker_plan(key, ids, task_s=0)
        t, lines = 5.0, [(5.0, format_event("started", key, ts=5.0, task_ids=ids))]
        for task_id in ids:
            t += 600 if task_id in slow else 60
            lines.append(
                (
                    t,
                    format_event(
                        "task_result",
                        key,
                        ts=t,
                        task_id=task_id,
                        status="success",
                        score=1.0,
                        duration_s=1.0,
                    ),
                )
            )
        plan.lines, plan.end_at = lines, t + 1
        return plan

    makespans = {}
    for strategy in ("static", "dynamic"):
        engine, _, _ = make_engine(
            tmp_path / strategy, plan, workers=2, scheduling=strategy, poll_interval=5
        )
        makespans[strategy] = engine.run().makespan_s
    assert makespans["dynamic"] < 0.75 * makespans["static"]


def test_transient_job_failure_requeues_and_charges_only_the_task_in_flight(tmp_path):
    def plan(key, ids, n):
        if n == 1:  # preempted while running its second task
            p = worker_plan(key, ids, stop_after=1)
            p.end_at, p.end_state = 100.0, JobState.FAILED
            p.error_code, p.error_message = "NodePreempted", "low-priority node was preempted"
            return p
        return worker_plan(key, ids)

    engine, tier, clock = make_engine(tmp_path, plan, workers=1, max_chunk=3)
    result = engine.run()
    first = tier.submits[0][1]
    assert sorted(result.tasks) == sorted(IDS)
    [retry] = [r for r in result.retries if r.code == "NodePreempted"]
    assert retry.kind == "transient" and retry.requeued_task_ids == tuple(first[1:])
    assert tier.submits[1][1][:2] == first[1:]  # requeued tasks come back first
    _, jobs, attempts, _ = ledger_rows(tmp_path)
    charged = [a for a in attempts if a.outcome == "error"]
    assert [(a.task_id, a.failure_code) for a in charged] == [(first[1], "NodePreempted")]
    assert result.tasks[first[1]].attempts == 2 and result.tasks[first[2]].attempts == 1
    assert jobs[0].failure_code == "NodePreempted" and jobs[0].state == "FAILED"
    # backoff: the next job was held at least the backoff (5 s) after the failure was seen
    assert tier.submits[1][2] >= tier.submits[0][2] + 100 + 5


def test_retry_after_longer_than_the_submit_budget_holds_submissions(tmp_path):
    engine, tier, clock = make_engine(
        tmp_path, lambda k, i, n: worker_plan(k, i), workers=1, balanced_head=0.0
    )
    t0 = clock()
    # 200 s is beyond the submit policy's 90 s budget: the call gives up at once...
    tier.submit_errors = [HttpError(503, "busy", {"Retry-After": "200"})]
    result = engine.run()
    # ...and the engine waits out the Retry-After before submitting again.
    assert tier.submits[0][2] >= t0 + 200
    [retry] = [r for r in result.retries if r.code == "ServerError"]
    assert retry.requeued_task_ids == ("c0", "c1", "c2", "c3")
    assert len(result.tasks) == 8


def test_submit_is_retried_with_retry_after_then_permanent_submit_error_stops(tmp_path):
    engine, tier, clock = make_engine(tmp_path, lambda k, i, n: worker_plan(k, i), workers=1)
    slept = []
    original = clock.sleep

    def sleep(seconds):
        slept.append(seconds)
        original(seconds)

    engine._sleep = sleep
    tier.submit_errors = [HttpError(429, "Too many requests", {"Retry-After": "42"})]
    result = engine.run()
    assert 42.0 in slept
    assert any(r.code == "Throttled" and "submit attempt 1" in r.reason for r in result.retries)
    assert len(result.tasks) == 8

    engine, tier, _ = make_engine(tmp_path / "p", lambda k, i, n: worker_plan(k, i))
    tier.submit_errors = [HttpError(403, "The client does not have authorization to perform")]
    with pytest.raises(PermanentFailure) as info:
        engine.run()
    assert info.value.failure.code == "AuthorizationFailed"
    assert "grant the identity a role" in str(info.value)
    assert tier.submits == []


def test_a_worker_that_cannot_read_its_secrets_stops_the_run_with_its_message(tmp_path):
    message = (
        "the worker's managed identity may not read secret 'waa-aml-OPENAI-API-KEY' in "
        "https://kv.vault.azure.net (Forbidden): grant it the 'Key Vault Secrets User' role"
    )

    def plan(key, ids, n):
        event = format_event("failed", key, ts=2.0, code="AuthorizationFailed", message=message)
        return Plan(running_at=1, end_at=3, end_state=JobState.FAILED, lines=[(2.0, event)])

    engine, tier, _ = make_engine(tmp_path, plan, workers=2)
    with pytest.raises(PermanentFailure) as info:
        engine.run()
    assert info.value.failure.code == "AuthorizationFailed"
    assert "Key Vault Secrets User" in str(info.value)
    assert len(tier.submits) <= 2  # nothing resubmitted


def test_permanent_job_failure_cancels_everything_and_carries_the_hint(tmp_path):
    def plan(key, ids, n):
        if n == 2:
            return Plan(
                running_at=1,
                end_at=30,
                end_state=JobState.FAILED,
                error_code="ImagePullFailed",
                error_message="pull access denied for waa.azurecr.io/winarena",
            )
        return worker_plan(key, ids, task_s=500)

    engine, tier, _ = make_engine(tmp_path, plan, workers=3)
    with pytest.raises(PermanentFailure) as info:
        engine.run()
    assert info.value.failure.code == "ImagePullDenied"
    assert "AcrPull" in info.value.failure.hint and "AcrPull" in str(info.value)
    assert sorted(tier.cancelled) == ["h-1", "h-3"]  # the others it had started
    _, jobs, _, meta = ledger_rows(tmp_path)
    assert meta.status == "failed"
    assert {j.handle: j.state for j in jobs} == {
        "h-1": "CANCELED",
        "h-2": "FAILED",
        "h-3": "CANCELED",
    }
    assert read_status(tmp_path / "status.json")["status"] == "failed"


def test_startup_timeout_cancels_and_retries(tmp_path):
    def plan(key, ids, n):
        if n == 1:
            return Plan(running_at=30)  # RUNNING, but the container never prints
        return worker_plan(key, ids)

    engine, tier, _ = make_engine(tmp_path, plan, workers=1, startup_timeout=120)
    result = engine.run()
    assert tier.cancelled == ["h-1"]
    [retry] = [r for r in result.retries if r.code == "StartupTimeout"]
    assert "within 120s of reaching RUNNING" in retry.reason
    assert retry.requeued_task_ids == tuple(tier.submits[0][1])
    cancelled_at = tier.jobs["h-1"]["cancelled_at"] - tier.jobs["h-1"]["t0"]
    assert 150 <= cancelled_at <= 160  # RUNNING at 30 s + 120 s limit, one poll of slack
    assert all(t.attempts == 1 for t in result.tasks.values())  # no task was charged


def test_job_that_never_leaves_the_queue_times_out_from_submission(tmp_path):
    def plan(key, ids, n):
        return Plan(running_at=None) if n == 1 else worker_plan(key, ids)

    engine, tier, _ = make_engine(tmp_path, plan, workers=1, startup_timeout=60)
    result = engine.run()
    [retry] = [r for r in result.retries if r.code == "StartupTimeout"]
    assert "of submission" in retry.reason and "QUEUED" in retry.reason


def test_silent_job_is_stuck_cancelled_and_its_task_retried(tmp_path):
    def plan(key, ids, n):
        return worker_plan(key, ids, stop_after=1) if n == 1 else worker_plan(key, ids)

    engine, tier, _ = make_engine(tmp_path, plan, workers=1, stuck_after=300)
    result = engine.run()
    assert tier.cancelled == ["h-1"]
    [retry] = [r for r in result.retries if r.code == "Stuck"]
    stuck_task = tier.submits[0][1][1]
    assert retry.requeued_task_ids[0] == stuck_task
    assert result.tasks[stuck_task].status == "success" and result.tasks[stuck_task].attempts == 2


def test_heartbeats_without_client_output_still_count_as_stuck(tmp_path):
    def plan(key, ids, n):
        if n == 1:
            return worker_plan(key, ids, stop_after=0, heartbeat=30, client_idle=True)
        return worker_plan(key, ids)

    engine, tier, _ = make_engine(tmp_path, plan, workers=1, stuck_after=300)
    result = engine.run()
    [retry] = [r for r in result.retries if r.code == "Stuck"]
    assert "WAA client silent" in retry.reason


def test_task_errors_are_retried_up_to_max_attempts_then_recorded(tmp_path):
    def plan(key, ids, n):
        return worker_plan(key, ids, statuses={"v3": "error"})

    engine, tier, _ = make_engine(tmp_path, plan, max_attempts=3)
    result = engine.run()
    assert tier.tasks_submitted().count("v3") == 3
    outcome = result.tasks["v3"]
    assert outcome.status == "error" and outcome.attempts == 3
    assert "gave up after 3 attempt(s)" in outcome.error and "client exploded" in outcome.error
    assert result.errored == 1 and result.succeeded == 7


def test_completed_job_missing_results_gets_them_requeued(tmp_path):
    def plan(key, ids, n):
        if n == 1:
            p = worker_plan(key, ids, stop_after=1)
            p.end_at = 200.0  # exits 0 after one task
            return p
        return worker_plan(key, ids)

    engine, tier, _ = make_engine(tmp_path, plan, workers=1)
    result = engine.run()
    assert len(result.tasks) == 8
    [retry] = [r for r in result.retries if r.code == "WorkerCrash"]
    assert "without reporting" in retry.reason


def test_circuit_breaker_stops_a_tier_that_keeps_failing(tmp_path):
    def plan(key, ids, n):
        return Plan(
            running_at=1,
            end_at=10,
            end_state=JobState.FAILED,
            error_code="InternalServerError",
            error_message="compute agent unreachable",
        )

    engine, tier, _ = make_engine(
        tmp_path,
        plan,
        workers=2,
        breaker_threshold=3,
        breaker_cooldown=120,
        breaker_give_up_after=600,
    )
    with pytest.raises(TierUnhealthy) as info:
        engine.run()
    message = str(info.value)
    assert "kept failing" in message and "compute agent unreachable" in message
    assert "run again to resume" in message
    # Open breaker: only one trial job per cooldown, so few submissions in total.
    assert 3 <= len(tier.submits) <= 10
    results, _, _, meta = ledger_rows(tmp_path)
    assert results == {} and meta.status == "stopped"


def test_resume_never_runs_a_finished_task_again(tmp_path):
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.init_run("run", "", 1.0)
        for task_id in IDS[:5]:
            ledger.record_result(task_id, "success", 1.0, job_key="old")
    engine, tier, _ = make_engine(tmp_path, lambda k, i, n: worker_plan(k, i))
    result = engine.run()
    assert sorted(tier.tasks_submitted()) == sorted(IDS[5:])
    assert len(result.tasks) == 8 and result.duplicates_ignored == 0
    _, _, _, meta = ledger_rows(tmp_path)
    assert meta.sessions == 2


def test_resume_with_different_fingerprint_is_refused(tmp_path):
    engine, _, _ = make_engine(tmp_path, lambda k, i, n: worker_plan(k, i), config_fingerprint="a")
    engine.run()
    engine, _, _ = make_engine(tmp_path, lambda k, i, n: worker_plan(k, i), config_fingerprint="b")
    with pytest.raises(LedgerMismatch):
        engine.run()


def test_keyboard_interrupt_cancels_running_jobs_and_reraises(tmp_path):
    engine, tier, clock = make_engine(tmp_path, lambda k, i, n: worker_plan(k, i, task_s=500))

    def interrupt(now):
        if now > clock_start + 50:
            raise KeyboardInterrupt

    clock_start = clock()
    clock.on_sleep = interrupt
    with pytest.raises(KeyboardInterrupt):
        engine.run()
    assert sorted(tier.cancelled) == ["h-1", "h-2"]
    _, jobs, _, meta = ledger_rows(tmp_path)
    assert meta.status == "cancelled"
    assert all(j.state == "CANCELED" and "run cancelled" in j.reason for j in jobs)


def test_an_interrupt_while_recording_an_accepted_job_cancels_that_job(tmp_path, monkeypatch):
    # Ctrl-C lands just after the tier accepted the job, while the ledger records it.
    engine, tier, _ = make_engine(tmp_path, lambda k, i, n: worker_plan(k, i, task_s=500))
    record = Ledger.update_job

    def update_job(ledger, job_key, **fields):
        record(ledger, job_key, **fields)
        if fields.get("state") is JobState.QUEUED:
            raise KeyboardInterrupt

    monkeypatch.setattr(Ledger, "update_job", update_job)
    with pytest.raises(KeyboardInterrupt):
        engine.run()
    assert tier.cancelled == ["h-1"]
    _, jobs, _, meta = ledger_rows(tmp_path)
    assert meta.status == "cancelled"
    assert [(j.handle, j.state) for j in jobs] == [("h-1", "CANCELED")]


def test_sigterm_cancels_running_jobs_and_raises_run_cancelled(tmp_path):
    engine, tier, clock = make_engine(tmp_path, lambda k, i, n: worker_plan(k, i, task_s=500))
    engine._handle_signals = True
    previous = signal.getsignal(signal.SIGTERM)
    clock.on_sleep = lambda now: os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(RunCancelled, match="signal 15"):
        engine.run()
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored
    assert sorted(tier.cancelled) == ["h-1", "h-2"]
    assert ledger_rows(tmp_path)[3].status == "cancelled"


def test_duplicate_task_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        make_engine(tmp_path, lambda k, i, n: worker_plan(k, i), tasks=TASKS + TASKS[:1])


def test_a_type_error_inside_the_tier_is_a_crash_of_that_job_not_a_bad_setting(tmp_path):
    engine, tier, clock = make_engine(tmp_path, lambda key, ids, n: worker_plan(key, ids))
    calls = {"n": 0}
    original = tier.status

    def status(handle):
        calls["n"] += 1
        if handle == "h-1":  # the first job's status reads keep crashing inside the tier
            raise TypeError("'NoneType' object is not subscriptable")
        return original(handle)

    tier.status = status
    result = engine.run()
    assert sorted(result.tasks) == sorted(IDS)
    crashed = [r for r in result.retries if r.job_key.endswith("0001")]
    assert [(r.kind, r.code) for r in crashed] == [("transient", "WorkerCrash")]
    assert "TypeError" in crashed[0].reason


def test_a_tier_of_fixed_capacity_runs_no_more_jobs_than_its_hosts(tmp_path):
    engine, tier, clock = make_engine(
        tmp_path, lambda key, ids, n: worker_plan(key, ids), workers=4
    )
    tier.capacity = lambda: 1
    engine = EvaluationEngine(
        tier,
        TASKS,
        tmp_path / "fixed.db",
        engine.config,
        clock=clock,
        sleep=clock.sleep,
        handle_signals=False,
    )
    seen = []
    clock.on_sleep = lambda now: seen.append(len(engine._book.active))
    engine.run()
    assert max(seen) == 1


class Killed(BaseException):
    """The controller dies: nothing of the engine's clean-up runs."""


def killed_midway(tmp_path, planner, kill_at, **config):
    """A first session killed ``kill_at`` seconds in, leaving its jobs running on the tier."""
    engine, tier, clock = make_engine(tmp_path, planner, **config)
    start = clock.now
    engine._cancel_all = lambda now, reason: None
    engine._publish = lambda now, status, *args: None

    def kill(now):
        if now - start >= kill_at:
            raise Killed()

    clock.on_sleep = kill
    with pytest.raises(Killed):
        engine.run()
    clock.on_sleep = None
    for job in tier.jobs.values():
        job["read"] = 0  # a new controller's tier reads every log from its start
    return tier, clock


def resume(tmp_path, tier, clock, **config):
    """The same command run again: a new engine on the same ledger and tier."""
    engine = EvaluationEngine(
        tier,
        TASKS,
        tmp_path / "ledger.db",
        EngineConfig(run_id="run", **config),
        clock=clock,
        sleep=clock.sleep,
        handle_signals=False,
    )
    return engine.run()


def test_resume_takes_the_orphans_results_and_adopts_the_running_ones(tmp_path):
    tier, clock = killed_midway(
        tmp_path, lambda k, i, n: worker_plan(k, i), kill_at=150, workers=2, max_chunk=3
    )
    first_jobs = {key: ids for key, ids, _ in tier.submits}
    results_before, _, _, _ = ledger_rows(tmp_path)
    assert 1 <= len(results_before) < 8

    result = resume(tmp_path, tier, clock, workers=2, poll_interval=10, max_chunk=3)

    results, jobs, attempts, meta = ledger_rows(tmp_path)
    assert sorted(results) == sorted(IDS) and result.duplicates_ignored == 0
    assert (meta.sessions, meta.status) == (2, "completed")
    # every task of the orphaned jobs was finished by them: none was handed out again
    orphaned = {t for ids in first_jobs.values() for t in ids}
    later = [ids for key, ids, _ in tier.submits if key not in first_jobs]
    assert orphaned.isdisjoint(t for ids in later for t in ids)
    assert {results[t].job_key for t in orphaned} <= set(first_jobs)
    by_key = {job.job_key: job for job in jobs}
    assert all(by_key[key].state == "COMPLETED" for key in first_jobs)
    assert tier.cancelled == []
    # one attempt per task: nothing the first session took was taken again
    assert sorted(a.task_id for a in attempts) == sorted(IDS)


def test_an_orphan_not_started_yet_gets_its_startup_limit_from_its_adoption(tmp_path):
    # Job 2 waits for a node until 150 s after its submission; its first controller dies at
    # 50 s and a new one takes over at 80 s. What happened in between nobody saw (a node may
    # have freed for it): its startup clock starts at the adoption, not at the submission.
    def plan(key, ids, n):
        if n == 2:
            late = worker_plan(key, ids, start=155.0)
            late.running_at = 150.0
            return late
        return worker_plan(key, ids)

    tier, clock = killed_midway(
        tmp_path, plan, kill_at=50, workers=2, max_chunk=4, startup_timeout=100
    )
    clock.now += 30
    result = resume(tmp_path, tier, clock, workers=2, max_chunk=4, startup_timeout=100)

    assert sorted(result.tasks) == sorted(IDS) and result.retries == []
    assert tier.cancelled == []
    _, jobs, _, _ = ledger_rows(tmp_path)
    assert (jobs[1].state, jobs[1].failure_code) == ("COMPLETED", None)


def test_resume_cancels_an_orphan_that_is_stuck(tmp_path):
    def plan(key, ids, n):
        return worker_plan(key, ids, stop_after=1) if n == 1 else worker_plan(key, ids)

    tier, clock = killed_midway(tmp_path, plan, kill_at=150, workers=1, max_chunk=3)
    clock.now += 1000  # the controller came back long after the first job went silent
    result = resume(tmp_path, tier, clock, workers=1, poll_interval=10, stuck_after=600)
    assert sorted(result.tasks) == sorted(IDS) and result.duplicates_ignored == 0
    assert tier.cancelled == ["h-1"]
    _, jobs, _, _ = ledger_rows(tmp_path)
    assert (jobs[0].state, jobs[0].failure_code) == ("CANCELED", "Stuck")


def test_a_resumed_runs_report_status_and_cost_cover_every_session(tmp_path):
    def plan(key, ids, n):
        if n == 1:
            p = worker_plan(key, ids, stop_after=0)
            p.end_at, p.end_state = 30.0, JobState.FAILED
            p.error_code, p.error_message = "NodePreempted", "evicted"
            return p
        return worker_plan(key, ids)

    tier, clock = killed_midway(tmp_path, plan, kill_at=200, workers=2, max_chunk=3)
    result = resume(
        tmp_path, tier, clock, workers=2, poll_interval=10, status_file=tmp_path / "s.json"
    )

    _, jobs, _, meta = ledger_rows(tmp_path)
    assert result.sessions == 2 and result.jobs_submitted == len(jobs)
    assert 0 < result.session_jobs_submitted < len(jobs)
    assert [r.code for r in result.retries][:1] == ["NodePreempted"]  # from the first session
    assert result.started_at == meta.started_at
    assert result.makespan_s == result.finished_at - meta.started_at
    # one cost figure: the status file's last word is the report's
    assert read_status(tmp_path / "s.json")["cost"]["current_usd"] == round(
        result.cost.total_usd, 4
    )


def test_a_read_that_hangs_holds_up_no_other_job_and_its_job_is_not_judged_for_it(tmp_path):
    import threading

    engine, tier, clock = make_engine(
        tmp_path,
        lambda k, i, n: worker_plan(k, i, task_s=10, start=1),
        workers=2,
        max_chunk=2,
        poll_interval=1,
        stuck_after=30,
        startup_timeout=30,
    )
    released = threading.Event()
    released_by = []
    original = tier.status

    def status(handle):
        if handle == "h-1" and not released.is_set():
            released.wait(60)  # a call stuck in the SDK's own retries, say
        return original(handle)

    tier.status = status

    def release_when_the_other_job_is_done(now):
        if released.is_set() or len(tier.submits) < 2:
            return
        second = tier.submits[1]
        if all(t in engine._final for t in second[1]):
            released_by.append(now)
            released.set()

    clock.on_sleep = release_when_the_other_job_is_done
    result = engine.run()
    assert released_by, "the other job's tasks were not recorded while the first read hung"
    assert sorted(result.tasks) == sorted(IDS)
    # the first job was not judged stuck or slow to start for the time nobody could look
    assert tier.cancelled == []
    assert [r.code for r in result.retries] == []
