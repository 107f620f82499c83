"""tier=auto against the emulator: the Azure ML tier (the real SDK) first, a second tier next;
Azure ML's jobs are made to fail from the middle of the run through the emulator's admin API.
Every task finishes exactly once, on the next tier for the rest of the run, the pool's record
names the move, and no node is left running.

The second tier is the local one (worker processes on the controller); the VM and Batch tiers
take its place in the same way (the pool sees only the tier contract)."""

from __future__ import annotations

import threading
import time

import pytest
from aml_setup import FAST_JOB_ENV, build
from test_aml_evaluation import engine_config, results_so_far

from ansible_collections.openadapt.azure_eval.plugins.module_utils.budget import (
    Budget,
    BudgetReached,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import EvaluationEngine
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from ansible_collections.openadapt.azure_eval.plugins.module_utils.retries import RetryPolicy
from ansible_collections.openadapt.azure_eval.plugins.module_utils.scale_down import (
    nodes_left,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier_pool import TierPool
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.local import LocalTier
from localazure.workload.task_model import list_tasks

pytestmark = pytest.mark.integration

TASKS = list_tasks()[::12]  # 13 tasks over the domains


def pool_for(world, run_id, tmp_path):
    aml = world.tier(run_id)
    local = LocalTier(tmp_path / "local", extra_env=FAST_JOB_ENV, heartbeat_interval=0.25)
    return TierPool([("aml", aml, 2), ("local", local, 2)], breaker_threshold=2), local


def when_results(ledger_path, count, action, timeout=60.0):
    """Run ``action`` once the run has ``count`` results (from a thread)."""

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(results_so_far(ledger_path)) >= count:
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def tiers_of_results(ledger_path):
    with Ledger(ledger_path) as ledger:
        handles = {job.job_key: job.handle for job in ledger.jobs()}
        rows = ledger.results()
        assert ledger.duplicates_ignored == 0
    return {task: handles[row.job_key].split("/")[0] for task, row in rows.items()}


@pytest.mark.parametrize(
    "fault",
    [
        # The containers crash from the middle of the run on.
        ("ml/faults", {"fault": "crash", "job": "^auto-", "after_s": 0.0, "times": 100}),
        # The job API answers 503 from then on, beyond the submit retries.
        ("faults", {"method": "PUT", "path": "/jobs/auto-", "status": 503, "times": 1000}),
    ],
    ids=["containers-crash", "api-5xx"],
)
def test_aml_failing_from_the_middle_moves_the_rest_to_the_next_tier(azure, tmp_path, fault):
    world = build(azure, cluster=dict(max_nodes=2, idle_s=1))
    ledger_path = tmp_path / "ledger.db"
    pool, local = pool_for(world, "auto", tmp_path)
    watcher = when_results(ledger_path, 3, lambda: azure.admin("POST", *fault))
    try:
        engine = EvaluationEngine(
            pool,
            TASKS,
            ledger_path,
            engine_config(
                "auto",
                pool.price_per_node_hour,
                workers=2,
                submit_retry=RetryPolicy(max_attempts=2, initial_delay=0.1, jitter=0.0),
            ),
            handle_signals=False,
        )
        result = engine.run()
        watcher.join(5)
    finally:
        pool.close()

    assert result.status == "completed"
    ran_on = tiers_of_results(ledger_path)
    assert sorted(ran_on) == sorted(task for _, task in TASKS)  # every task exactly once
    assert "aml" in ran_on.values() and "local" in ran_on.values()
    described = pool.describe()
    [move] = [m for m in described["moves"] if m["event"] == "out"]
    assert (move["tier"], move["to"]) == ("aml", "local")
    assert described["members"]["aml"]["state"] == "out"
    # Nothing left running anywhere: no AML job active, the cluster back to zero nodes, no
    # local worker alive.
    statuses = world.wait_terminal(timeout=30)
    assert set(statuses.values()) <= {"Completed", "Failed", "Canceled"}
    world.wait_scaled_down(timeout=30)
    assert nodes_left(pool, wait_s=30) == {"aml": 0, "local": 0}
    assert all(job.process.poll() is not None for job in local._jobs.values())


def test_budget_below_the_estimate_stops_feeding_and_a_higher_one_resumes(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=2, idle_s=1))
    ledger_path = tmp_path / "ledger.db"
    tasks = TASKS[:8]

    def session(limit):
        # $1 per node-second, so that a few tasks pass the budget.
        budget = Budget(limit_usd=limit, warn_fraction=0.5)
        engine = EvaluationEngine(
            world.tier("budget"),
            tasks,
            ledger_path,
            engine_config("budget", 3600.0, workers=2, max_chunk=1, budget=budget),
            handle_signals=False,
        )
        try:
            return engine.run(), budget
        finally:
            engine.tier.close()

    with pytest.raises(BudgetReached, match="higher eval_budget_usd"):
        session(4.0)
    with Ledger(ledger_path) as ledger:
        stopped, done = ledger.run_meta().status, len(ledger.results())
    assert stopped == "stopped" and 1 <= done < len(tasks)
    world.wait_terminal(timeout=30)  # nothing was left running
    world.wait_scaled_down(timeout=30)

    result, budget = session(100_000.0)
    assert result.status == "completed" and len(result.tasks) == len(tasks)
    assert result.sessions == 2 and not budget.refused
    assert sorted(tiers_of_results_single(ledger_path)) == sorted(t for _, t in tasks)


def tiers_of_results_single(ledger_path):
    with Ledger(ledger_path) as ledger:
        assert ledger.duplicates_ignored == 0
        return list(ledger.results())


def test_aml_containers_crashing_from_the_middle_move_the_rest_to_batch(azure, tmp_path):
    """The seed's order: Azure ML first, Azure Batch next; the Batch pool is resized to zero by
    the scale-down check once the run ends."""
    from batch_setup import BatchTierWorld

    world = build(azure, cluster=dict(max_nodes=2, idle_s=1))
    batch = BatchTierWorld(azure, nodes=2)
    batch.wait_steady()
    ledger_path = tmp_path / "ledger.db"
    pool = TierPool(
        [("aml", world.tier("fb"), 2), ("batch", batch.tier("fb"), 2)], breaker_threshold=2
    )
    fault = {"fault": "crash", "job": "^fb-", "after_s": 0.0, "times": 100}
    watcher = when_results(ledger_path, 3, lambda: azure.admin("POST", "ml/faults", fault))
    try:
        result = EvaluationEngine(
            pool,
            TASKS,
            ledger_path,
            engine_config("fb", pool.price_per_node_hour, workers=2),
            handle_signals=False,
        ).run()
        watcher.join(5)
        left = nodes_left(pool, wait_s=60)
    finally:
        pool.close()

    assert result.status == "completed"
    ran_on = tiers_of_results(ledger_path)
    assert sorted(ran_on) == sorted(task for _, task in TASKS)
    assert set(ran_on.values()) == {"aml", "batch"}
    [move] = [m for m in pool.describe()["moves"] if m["event"] == "out"]
    assert (move["tier"], move["to"]) == ("aml", "batch")
    assert left == {"aml": 0, "batch": 0}
    world.wait_scaled_down(timeout=30)
