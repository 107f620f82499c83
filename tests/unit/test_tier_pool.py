"""The engine over a pool of tiers (tier_pool.py): real local worker processes as members; one
member made to fail from its n-th job (its API answers 503 beyond the submit retries, or quota
is refused), the other takes the rest of the same run."""

from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.budget import (
    Budget,
    BudgetReached,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (
    EngineConfig,
    EvaluationEngine,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    PermanentFailure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from ansible_collections.openadapt.azure_eval.plugins.module_utils.retries import RetryPolicy
from ansible_collections.openadapt.azure_eval.plugins.module_utils.rightsizing import (
    TaskClasses,
    class_of,
    profile_from_durations,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier_pool import TierPool
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    JobState,
    JobStatus,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.local import LocalTier
from localazure.workload import task_model

TASKS = task_model.list_tasks()[::11]  # 14 tasks over the domains
FAST = {"WAA_STANDIN_TIME_SCALE": "0.005", "HEARTBEAT_INTERVAL": "0.2"}


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.error = type("E", (), {"code": code})() if code else None


class FailingFrom(LocalTier):
    """A local tier whose API refuses every submit from its ``fail_from``-th on."""

    def __init__(self, *args, fail_from: int, status: int = 503, code=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail_from, self.status_code, self.code = fail_from, status, code
        self.submits = 0

    def submit(self, job_key, task_ids):
        self.submits += 1
        if self.submits >= self.fail_from:
            raise ApiError(self.status_code, "the service is unavailable", self.code)
        return super().submit(job_key, task_ids)


def config(**overrides):
    values = dict(
        workers=2,
        poll_interval=0.05,
        startup_timeout=10.0,
        stuck_after=10.0,
        requeue_backoff_initial=0.05,
        requeue_backoff_max=0.2,
        requeue_backoff_jitter=0.0,
        breaker_cooldown=30.0,
        breaker_give_up_after=20.0,
        submit_retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.02, jitter=0.0),
        run_id="pool",
    )
    values.update(overrides)
    return EngineConfig(**values)


@pytest.fixture
def members(tmp_path):
    made = []

    def make(name, cls=LocalTier, **kwargs):
        tier = cls(tmp_path / name, extra_env=FAST, heartbeat_interval=0.2, **kwargs)
        made.append(tier)
        return tier

    yield make
    for tier in made:
        tier.close()


def tiers_of_results(ledger_path):
    with Ledger(ledger_path) as ledger:
        jobs = {job.job_key: job.handle for job in ledger.jobs()}
        rows = ledger.results()
        assert ledger.duplicates_ignored == 0
    return {task: jobs[row.job_key].split("/")[0] for task, row in rows.items()}


def test_fallback_moves_the_remaining_tasks_to_the_next_tier(members, tmp_path):
    first = members("aml", FailingFrom, fail_from=3)
    pool = TierPool([("aml", first, 2), ("local", members("local"), 2)])
    ledger = tmp_path / "ledger.sqlite3"
    status_file = tmp_path / "status.json"
    result = EvaluationEngine(
        pool, TASKS, ledger, config(status_file=status_file), handle_signals=False
    ).run()

    assert result.status == "completed" and len(result.tasks) == len(TASKS)
    ran_on = tiers_of_results(ledger)
    assert sorted(ran_on) == sorted(t for _, t in TASKS)  # every task once
    assert set(ran_on.values()) == {"aml", "local"}
    [move] = pool.describe()["moves"]
    assert (move["tier"], move["to"], move["event"]) == ("aml", "local", "out")
    assert "ServerError" in move["reason"]
    assert pool.describe()["members"]["aml"]["state"] == "out"
    import json

    status = json.loads(status_file.read_text())
    assert status["tier_moves"][0]["to"] == "local"
    assert status["tiers"]["aml"]["state"] == "out"


def test_quota_refusal_is_a_reason_to_move_but_a_missing_image_is_not(members, tmp_path):
    quota = members("aml", FailingFrom, fail_from=1, status=400, code="QuotaExceeded")
    pool = TierPool([("aml", quota, 2), ("local", members("local"), 2)])
    result = EvaluationEngine(
        pool, TASKS[:4], tmp_path / "a.sqlite3", config(), handle_signals=False
    ).run()
    assert result.status == "completed"
    assert set(tiers_of_results(tmp_path / "a.sqlite3").values()) == {"local"}
    assert "QuotaExceeded" in pool.moves[0].reason

    missing = members("aml2", FailingFrom, fail_from=1, status=404, code="ImageNotFound")
    pool = TierPool([("aml2", missing, 2), ("local2", members("local2"), 2)])
    with pytest.raises(PermanentFailure, match="ImageNotFound"):
        EvaluationEngine(
            pool, TASKS[:4], tmp_path / "b.sqlite3", config(), handle_signals=False
        ).run()
    assert pool.moves == []


def test_a_recovered_tier_takes_new_work_again(members, tmp_path):
    flaky = members("aml", FailingFrom, fail_from=2)
    pool = TierPool([("aml", flaky, 1), ("local", members("local"), 1)], recover_after=0.3)
    original = flaky.submit

    def recovering(job_key, task_ids):
        if flaky.submits >= 8:  # the service is back after a while
            flaky.fail_from = 10**6
        return original(job_key, task_ids)

    flaky.submit = recovering
    tasks = task_model.list_tasks()[::5]
    result = EvaluationEngine(
        pool, tasks, tmp_path / "l.sqlite3", config(workers=1, max_chunk=1), handle_signals=False
    ).run()
    assert result.status == "completed"
    events = [(m["event"], m["tier"]) for m in pool.describe()["moves"]]
    assert ("out", "aml") in events and ("back", "aml") in events
    ran_on = tiers_of_results(tmp_path / "l.sqlite3")
    assert sorted(ran_on) == sorted(t for _, t in tasks)


def test_spread_feeds_every_tier_at_once_within_its_workers(members, tmp_path):
    pool = TierPool(
        [("aml", members("aml"), 2), ("batch", members("batch"), 1), ("vm", members("vm"), 1)],
        mode="spread",
    )
    engine = EvaluationEngine(pool, TASKS, tmp_path / "s.sqlite3", config(), handle_signals=False)
    assert engine._workers == 4
    result = engine.run()
    assert result.status == "completed"
    ran_on = tiers_of_results(tmp_path / "s.sqlite3")
    assert set(ran_on.values()) == {"aml", "batch", "vm"}
    assert sorted(ran_on) == sorted(t for _, t in TASKS)


def test_budget_stops_feeding_and_a_higher_budget_resumes(members, tmp_path):
    ledger = tmp_path / "budget.sqlite3"
    priced = members("priced")
    priced.price_per_node_hour = 3600.0  # $1 per node-second
    budget = Budget(limit_usd=1.0, warn_fraction=0.5)
    engine = EvaluationEngine(
        priced,
        TASKS,
        ledger,
        config(workers=1, max_chunk=1, price_per_node_hour=3600.0, budget=budget),
        handle_signals=False,
    )
    with pytest.raises(BudgetReached, match="higher eval_budget_usd"):
        engine.run()
    with Ledger(ledger) as book:
        done = len(book.results())
        status = book.run_meta().status
    assert 1 <= done < len(TASKS) and status == "stopped"
    assert budget.warned
    # Within the budget: the spend plus the in-flight estimate never passed it by a task's cost.
    per_task = budget.last["per_task_usd"]
    assert budget.last["spent_usd"] <= 1.0 + per_task

    more = Budget(limit_usd=10_000.0)
    result = EvaluationEngine(
        priced,
        TASKS,
        ledger,
        config(workers=1, max_chunk=1, price_per_node_hour=3600.0, budget=more),
        handle_signals=False,
    ).run()
    assert result.status == "completed" and len(result.tasks) == len(TASKS)
    assert result.sessions == 2


class OutOfMemoryFor(LocalTier):
    """A small size: a job holding one of ``too_big`` dies out of memory (the worker is killed
    before it reports anything)."""

    def __init__(self, *args, too_big, **kwargs):
        super().__init__(*args, **kwargs)
        self.too_big = set(too_big)
        self.killed: set[str] = set()

    def submit(self, job_key, task_ids):
        handle = super().submit(job_key, task_ids)
        if self.too_big & set(task_ids):
            self.killed.add(handle)
            self._kill_if_alive(self._job(handle))
        return handle

    def read_new_lines(self, handle):
        lines = super().read_new_lines(handle)
        return [] if handle in self.killed else lines

    def status(self, handle):
        status = super().status(handle)
        if handle in self.killed and status.state.terminal:
            return JobStatus(JobState.FAILED, "OutOfMemory", "the container ran out of memory")
        return status


def test_right_sizing_feeds_each_size_its_tasks_and_retries_too_small_on_the_larger(
    members, tmp_path
):
    domains = dict((t, d) for d, t in TASKS)
    classes = TaskClasses(domains)
    medium = [t for t in domains if classes.of(t) == "medium"][:2]
    small = members("small", OutOfMemoryFor, too_big=medium)
    pool = TierPool([("small", small, 2), ("large", members("large"), 1)], mode="spread")
    pool.member_sizes = {"small": ["simple", "medium"], "large": ["complex"]}
    pool.use_sizes(classes)
    ledger = tmp_path / "sized.sqlite3"
    result = EvaluationEngine(pool, TASKS, ledger, config(max_chunk=1), handle_signals=False).run()
    assert result.status == "completed" and len(result.tasks) == len(TASKS)
    ran_on = tiers_of_results(ledger)
    assert all(ran_on[t] == "large" for t in domains if classes.of(t) == "complex")
    assert any(size == "small" for size in ran_on.values())
    # Too small: moved up a class and run on the larger size.
    assert {classes.promoted[t] for t in medium} == {"complex"}
    assert all(ran_on[t] == "large" for t in medium)


def test_task_profile_default_and_measured():
    assert class_of("notepad") == "simple" and class_of("chrome") == "medium"
    assert class_of("libreoffice_calc") == "complex" and class_of("vs_code") == "complex"
    assert class_of("something_new") == "medium"
    measured = profile_from_durations({"a": [1, 1], "b": [4, 4], "c": [10, 12], "d": [4]})
    assert measured == {"simple": ["a"], "medium": ["b", "d"], "complex": ["c"]}
