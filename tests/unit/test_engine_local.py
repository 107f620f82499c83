"""End-to-end runs of the engine through LocalTier: real worker processes, the WAA stand-in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (
    EngineConfig,
    EvaluationEngine,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    PermanentFailure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.local import LocalTier
from localazure.workload import task_model

REPO_ROOT = Path(__file__).resolve().parents[2]
TASKS = task_model.list_tasks()[::13]  # 12 tasks spread over the domains
FAST = {"WAA_STANDIN_TIME_SCALE": "0.005"}


def config(**overrides):
    values = dict(
        workers=3,
        poll_interval=0.05,
        startup_timeout=5.0,
        stuck_after=5.0,
        max_attempts=3,
        requeue_backoff_initial=0.05,
        requeue_backoff_max=0.2,
        requeue_backoff_jitter=0.01,
        breaker_cooldown=0.5,
        run_id="local",
    )
    values.update(overrides)
    return EngineConfig(**values)


def expected_score(domain, task_id):
    return 1.0 if task_model.modelled_success(domain, task_id) else 0.0


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def wait_group_gone(pgid, timeout=5.0):
    deadline = time.time() + timeout
    while group_alive(pgid):
        if time.time() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def tier_factory(tmp_path):
    tiers = []

    def make(cls=LocalTier, env=FAST, **kwargs):
        tier = cls(
            tmp_path / "work", heartbeat_interval=0.1, extra_env=env, cancel_grace_s=1.0, **kwargs
        )
        tiers.append(tier)
        return tier

    yield make
    for tier in tiers:
        tier.close()


def test_every_task_exactly_once_with_the_modelled_outcome(tmp_path, tier_factory):
    tier = tier_factory()
    result = EvaluationEngine(
        tier, TASKS, tmp_path / "ledger.db", config(), handle_signals=False
    ).run()
    with Ledger(tmp_path / "ledger.db") as ledger:
        rows = ledger.results()
        assert ledger.duplicates_ignored == 0
    assert sorted(rows) == sorted(t for _, t in TASKS)
    for domain, task_id in TASKS:
        assert rows[task_id].score == expected_score(domain, task_id)
        assert rows[task_id].domain == domain
    assert result.retries == [] and result.jobs_submitted >= 3
    assert result.cost.node_hours > 0 and result.cost.total_usd > 0
    assert set(result.domains) == {d for d, _ in TASKS}


@pytest.mark.parametrize("task_feed", [False, True], ids=["job-per-chunk", "task-feed"])
def test_killed_controller_resumes_without_running_anything_twice(
    tmp_path, tier_factory, task_feed
):
    ledger_path = tmp_path / "ledger.db"
    runner = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(REPO_ROOT / "collections")!r}, {str(REPO_ROOT)!r}]
        from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (
            EngineConfig, EvaluationEngine)
        from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.local import (
            LocalTier)
        from localazure.workload import task_model
        tier = LocalTier({str(tmp_path / "work")!r}, heartbeat_interval=0.1,
                         extra_env={{"WAA_STANDIN_TIME_SCALE": "0.03"}},
                         task_feed={task_feed!r})
        EvaluationEngine(tier, task_model.list_tasks()[::13], {str(ledger_path)!r},
                         EngineConfig(workers=3, poll_interval=0.05, run_id="local")).run()
        """
    )
    controller = subprocess.Popen([sys.executable, "-c", runner])
    deadline = time.time() + 30
    done_before = {}
    while len(done_before) < 3:
        assert time.time() < deadline and controller.poll() is None
        time.sleep(0.05)
        if ledger_path.exists():
            with Ledger(ledger_path) as ledger:
                done_before = ledger.results()
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    with Ledger(ledger_path) as ledger:
        done_before = ledger.results()
        jobs_before = ledger.job_count()
    assert 3 <= len(done_before) < len(TASKS)

    result = EvaluationEngine(
        tier_factory(task_feed=task_feed), TASKS, ledger_path, config(), handle_signals=False
    ).run()
    with Ledger(ledger_path) as ledger:
        rows = ledger.results()
        second_session_jobs = ledger.jobs()[jobs_before:]
        assert ledger.duplicates_ignored == 0
        assert ledger.run_meta().sessions == 2
    assert sorted(rows) == sorted(t for _, t in TASKS)
    rerun = {t for job in second_session_jobs for t in job.task_ids}
    assert rerun == {t for _, t in TASKS} - set(done_before)
    for task_id, row in done_before.items():
        assert rows[task_id] == row  # first results untouched
    assert len(result.tasks) == len(TASKS)


class FirstAttemptStuck(LocalTier):
    """The first job that gets the task runs it with the stand-in's stuck fault."""

    def __init__(self, *args, stuck_task, **kwargs):
        super().__init__(*args, **kwargs)
        self.stuck_task = stuck_task
        self.stuck_job = None

    def job_env(self, job_key, task_ids):
        env = super().job_env(job_key, task_ids)
        if self.stuck_task in task_ids and self.stuck_job is None:
            self.stuck_job = job_key
            env["WAA_STANDIN_STUCK_TASK"] = self.stuck_task
        return env


def test_stuck_task_is_detected_cancelled_and_requeued(tmp_path, tier_factory):
    domain, stuck = TASKS[4]
    tier = tier_factory(FirstAttemptStuck, stuck_task=stuck)
    # Well above a task's time on a loaded machine: only the stuck task is silent that long.
    result = EvaluationEngine(
        tier, TASKS, tmp_path / "ledger.db", config(stuck_after=4.0), handle_signals=False
    ).run()
    [retry] = [r for r in result.retries if r.code == "Stuck"]
    assert retry.job_key == tier.stuck_job and stuck in retry.requeued_task_ids
    assert "WAA client silent" in retry.reason
    assert result.tasks[stuck].score == expected_score(domain, stuck)
    assert result.tasks[stuck].attempts == 2
    assert len(result.tasks) == len(TASKS)
    assert wait_group_gone(tier.pids()[tier.stuck_job])


def test_crashing_task_is_retried_then_recorded_as_error(tmp_path, tier_factory):
    _, crash = TASKS[7]
    tier = tier_factory(env={**FAST, "WAA_STANDIN_CRASH_TASK": crash})
    result = EvaluationEngine(
        tier, TASKS, tmp_path / "ledger.db", config(max_attempts=2), handle_signals=False
    ).run()
    outcome = result.tasks[crash]
    assert outcome.status == "error" and outcome.attempts == 2
    assert "simulated WAA client crash" in outcome.error
    assert result.errored == 1 and len(result.tasks) == len(TASKS)
    assert [r.code for r in result.retries] == ["TaskError"]


class SilentFirstWorker(LocalTier):
    """The first job's worker never prints: a container that never really started."""

    def worker_argv(self, job_key, task_ids):
        if job_key.endswith("-0001"):
            return [self.python, "-c", "import time; time.sleep(60)"]
        return super().worker_argv(job_key, task_ids)


def test_startup_timeout_cancels_the_silent_worker_and_retries(tmp_path, tier_factory):
    tier = tier_factory(SilentFirstWorker)
    result = EvaluationEngine(
        tier, TASKS, tmp_path / "ledger.db", config(startup_timeout=0.7), handle_signals=False
    ).run()
    first = job_key_ending(tier.pids(), "-0001")
    # On a loaded machine another worker may also start late; the silent one must be caught.
    [retry] = [r for r in result.retries if r.code == "StartupTimeout" and r.job_key == first]
    assert retry.requeued_task_ids
    assert wait_group_gone(tier.pids()[first])
    assert len(result.tasks) == len(TASKS)
    assert all(t.attempts == 1 for t in result.tasks.values())


class DeniedAfterFirst(LocalTier):
    def submit(self, job_key, task_ids):
        # By key, not by call order: the engine submits a round's jobs concurrently.
        if not job_key.endswith("-0001"):
            error = Exception(
                "pull access denied for winarena, repository does not exist or "
                "may require 'docker login': denied: requested access"
            )
            error.status_code = 400
            raise error
        return super().submit(job_key, task_ids)


def test_permanent_failure_stops_at_once_and_cancels_what_it_started(tmp_path, tier_factory):
    tier = tier_factory(DeniedAfterFirst, env={"WAA_STANDIN_TIME_SCALE": "0.5"})
    started = time.time()
    with pytest.raises(PermanentFailure) as info:
        EvaluationEngine(tier, TASKS, tmp_path / "ledger.db", config(), handle_signals=False).run()
    assert time.time() - started < 5
    assert info.value.failure.code == "ImagePullDenied"
    assert "AcrPull" in str(info.value)
    assert wait_group_gone(tier.pids()[job_key_ending(tier.pids(), "-0001")])
    with Ledger(tmp_path / "ledger.db") as ledger:
        jobs = {j.job_key: j for j in ledger.jobs()}
        assert ledger.run_meta().status == "failed"
    assert jobs[job_key_ending(jobs, "-0001")].state == "CANCELED"
    second = jobs[job_key_ending(jobs, "-0002")]
    assert second.state == "SUBMIT_FAILED"
    assert second.failure_code == "ImagePullDenied"


def job_key_ending(keys, suffix):
    """Job keys are <run>-<ledger instance>-<seq>; find one by its sequence number."""
    [key] = [k for k in keys if k.endswith(suffix)]
    return key


def test_dynamic_chunking_spreads_the_stragglers_static_sharding_stacks(tmp_path, tier_factory):
    """What makes dynamic scheduling faster, asserted on the jobs it made rather than on a clock
    (the makespans themselves are measured side by side in benchmarks/scheduling.py)."""
    by_minutes = sorted(task_model.list_tasks(), key=lambda dt: -task_model.modelled_minutes(*dt))
    skewed = by_minutes[:4] + by_minutes[-8:]  # stragglers first: static puts them on one worker
    stragglers = {task_id for _, task_id in skewed[:4]}
    most_stragglers_in_a_job = {}
    for strategy in ("static", "dynamic"):
        tier = tier_factory(env=FAST)
        tier.workdir = tmp_path / strategy
        tier.result_dir, tier.log_dir = tier.workdir / "results", tier.workdir / "logs"
        result = EvaluationEngine(
            tier,
            skewed,
            tmp_path / f"{strategy}.db",
            config(scheduling=strategy),
            handle_signals=False,
        ).run()
        assert len(result.tasks) == 12
        with Ledger(tmp_path / f"{strategy}.db") as ledger:
            jobs = [j for j in ledger.jobs() if j.state == "COMPLETED"]
        most_stragglers_in_a_job[strategy] = max(len(stragglers & set(j.task_ids)) for j in jobs)
    # static: the first of 3 shards holds all 4; dynamic: chunks of ceil(12 / (2 x 3)) = 2 at most
    assert most_stragglers_in_a_job == {"static": 4, "dynamic": 2}


# -- the task feed ------------------------------------------------------------------------------


def test_task_feed_runs_every_task_once_on_one_job_per_worker(tmp_path, tier_factory):
    tier = tier_factory(env={**FAST, "WAA_CLIENT_BATCH": "1"}, task_feed=True)
    result = EvaluationEngine(
        tier, TASKS, tmp_path / "ledger.db", config(), handle_signals=False
    ).run()
    with Ledger(tmp_path / "ledger.db") as ledger:
        rows = ledger.results()
        jobs = ledger.jobs()
        offers = {job.job_key: ledger.offers(job.job_key) for job in jobs}
        assert ledger.duplicates_ignored == 0
    assert sorted(rows) == sorted(t for _, t in TASKS)
    assert result.retries == [] and result.jobs_submitted == 3 == len(jobs)
    # Each job ran what it was started with plus what its feed handed it, and ended on an
    # empty entry; the ledger's job rows hold it all.
    assert sorted(t for job in jobs for t in job.task_ids) == sorted(rows)
    assert all(entries and entries[-1] == [] for entries in offers.values())
    assert any(len(entries) > 1 for entries in offers.values())
    for job in jobs:
        assert {t for t, row in rows.items() if row.job_key == job.job_key} == set(job.task_ids)


class FeedWriteFails(LocalTier):
    """The first entry written for the first job is lost (the write raises)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed: list[list[str]] = []

    def offer(self, handle, seq, task_ids):
        if not self.failed and task_ids:
            self.failed.append(list(task_ids))
            raise OSError("the feed's storage is unreachable")
        super().offer(handle, seq, task_ids)


def test_an_entry_that_could_not_be_written_is_requeued_free(tmp_path, tier_factory):
    tier = tier_factory(FeedWriteFails, env={**FAST, "WAA_TASK_FEED_WAIT": "0.5"}, task_feed=True)
    result = EvaluationEngine(
        tier, TASKS, tmp_path / "ledger.db", config(), handle_signals=False
    ).run()
    [lost] = tier.failed
    with Ledger(tmp_path / "ledger.db") as ledger:
        rows = ledger.results()
        assert all(ledger.attempt_count(t) == 1 for t in lost)
    assert sorted(rows) == sorted(t for _, t in TASKS)
    # The worker stopped waiting for the entry; its tasks ran in a later job, charged nothing.
    assert result.retries == []
    assert len({rows[t].job_key for t in lost}) >= 1 and result.jobs_submitted > 3
