"""The evaluation engine on the Batch tier against the emulator, with Batch's faults: a node
becoming unusable, a low-priority node preempted, a start task failing on one node (the run goes
on) or on every node (a permanent failure that says so), a resize stopped short by quota, a
wrong shared key and a TrustedLaunch pool (refused before anything starts). Each run ends with
every task once in the ledger, or with a clear message."""

from __future__ import annotations

import threading
import time

import pytest
from batch_setup import ACCOUNT, BatchTierWorld
from test_aml_evaluation import TASKS, assert_every_task_once, engine_config

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import EvaluationEngine
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    PermanentFailure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.batch import (
    BatchSetupError,
)

pytestmark = pytest.mark.integration
SOME = TASKS[:6]
SLOWER = {"WAA_STANDIN_TIME_SCALE": "0.15"}


def evaluate(world, run_id, ledger, tasks=SOME, tier=None, **overrides):
    tier = tier or world.tier(run_id)
    try:
        return EvaluationEngine(
            tier,
            tasks,
            ledger,
            engine_config(run_id, tier.price_per_node_hour, startup_timeout=30.0, **overrides),
            handle_signals=False,
        ).run()
    finally:
        tier.close()


def retries(ledger_path) -> list[str]:
    """Each retry as ``<canonical code>: <reason>``."""
    with Ledger(ledger_path) as ledger:
        return [f"{r['code']}: {r['reason']}" for r in ledger.retries()]


def fault_when_running(world, azure, run_id: str, fault: dict) -> threading.Thread:
    """Add a node fault once every node of the run's pool runs a task of the run."""

    def watch() -> None:
        client = world.tier(run_id).client
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                running = [t for t in client.task.list(run_id) if t.state == "running"]
            except Exception:  # noqa: BLE001 - the job is not there yet
                running = []
            if len(running) >= 2:
                azure.admin("POST", "batch/faults", {**fault, "after_s": 0.1})
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def world(azure):
    azure.admin("DELETE", "batch/faults")
    azure.admin("DELETE", "ml/faults")
    return BatchTierWorld(azure, nodes=2)


def test_a_run_on_the_pool_reports_every_task_once_with_its_cost(world, tmp_path):
    world.wait_steady()
    result = evaluate(world, "batch-ok", tmp_path / "ledger.sqlite3", workers=2)
    assert result.status == "completed"
    assert_every_task_once(tmp_path / "ledger.sqlite3", SOME)
    assert result.cost.node_hours > 0 and result.cost.total_usd > 0
    tasks = list(world.tier("batch-ok").client.task.list("batch-ok"))
    assert tasks and all(t.state == "completed" for t in tasks)


def test_a_node_that_becomes_unusable_costs_a_retry(world, azure, tmp_path):
    world.wait_steady()
    # Tasks of about a second; the fault strikes once the run's tasks run.
    fault_when_running(world, azure, "batch-unusable", {"fault": "unusable", "pool": "^waa$"})
    tier = world.tier("batch-unusable", job_environment=SLOWER)
    evaluate(world, "batch-unusable", tmp_path / "ledger.sqlite3", workers=2, tier=tier)
    assert_every_task_once(tmp_path / "ledger.sqlite3", SOME)
    found = retries(tmp_path / "ledger.sqlite3")
    # Seen unusable, or (on a loaded machine, a poll later) already removed from the pool.
    assert any("became unusable" in r or "node was removed" in r for r in found), found


def test_a_preempted_low_priority_node_costs_a_retry(azure, tmp_path):
    azure.admin("DELETE", "batch/faults")
    world = BatchTierWorld(azure, nodes=0, low_priority=2, pool="spot")
    world.wait_steady("spot")
    fault_when_running(world, azure, "batch-preempt", {"fault": "preempt", "pool": "^spot$"})
    tier = world.tier("batch-preempt", job_environment=SLOWER)
    evaluate(world, "batch-preempt", tmp_path / "ledger.sqlite3", workers=2, tier=tier)
    assert_every_task_once(tmp_path / "ledger.sqlite3", SOME)
    found = retries(tmp_path / "ledger.sqlite3")
    assert any(r.startswith("NodePreempted") for r in found), found


def test_a_start_task_failing_on_one_node_leaves_the_other(world, azure, tmp_path):
    azure.admin("POST", "batch/faults", {"fault": "start_task_fails", "pool": "^boot$"})
    world.make_pool("boot", 2, start_task={"command_line": "/bin/true", "wait_for_success": True})
    world.wait_steady("boot")
    evaluate(
        world,
        "batch-boot",
        tmp_path / "ledger.sqlite3",
        workers=2,
        tier=world.tier("batch-boot", pool="boot"),
    )
    assert_every_task_once(tmp_path / "ledger.sqlite3", SOME)
    states = sorted(
        str(getattr(n.state, "value", n.state)).lower()
        for n in world.tier("batch-boot", pool="boot").client.compute_node.list("boot")
    )
    assert states == ["idle", "starttaskfailed"]


def test_a_start_task_failing_everywhere_stops_the_run_with_its_reason(world, tmp_path):
    world.make_pool(
        "broken", 1, start_task={"command_line": "/bin/false", "wait_for_success": True}
    )
    with pytest.raises(PermanentFailure) as caught:
        evaluate(
            world,
            "batch-broken",
            tmp_path / "ledger.sqlite3",
            workers=1,
            tier=world.tier("batch-broken", pool="broken"),
        )
    assert "InvalidConfiguration" in str(caught.value) and "start task failed" in str(caught.value)
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert ledger.duplicates_ignored == 0


def test_quota_on_resize_runs_on_the_nodes_it_got(world, azure, tmp_path):
    azure.admin("PUT", f"batch/accounts/{ACCOUNT}/quota", {"families": {"standardDSv5Family": 12}})
    world.make_pool("tight", 5)  # 2 nodes of the first pool + 1 here fill the 12 cores
    pool = world.wait_steady("tight")
    assert pool.current_dedicated_nodes == 1
    assert pool.resize_operation_status.errors[0].code == "AccountCoreQuotaReached"
    evaluate(
        world,
        "batch-tight",
        tmp_path / "ledger.sqlite3",
        workers=2,
        tier=world.tier("batch-tight", pool="tight"),
    )
    assert_every_task_once(tmp_path / "ledger.sqlite3", SOME)


def test_a_wrong_shared_key_and_trusted_launch_are_refused_before_anything_starts(world):
    with pytest.raises(BatchSetupError, match="refused the credentials.*AuthenticationFailed"):
        world.tier("batch-key", account_key="d3Jvbmc=" * 8)
    keys = world.mgmt.batch_account.get_keys("tierbatch", ACCOUNT)
    assert world.tier("batch-key", account_key=keys.primary).describe()["pool"] == "waa"
    world.make_pool("trusted", 0, security_profile={"security_type": "trustedLaunch"})
    with pytest.raises(BatchSetupError, match="TrustedLaunch|trustedLaunch"):
        world.tier("batch-trusted", pool="trusted")
