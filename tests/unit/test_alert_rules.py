"""The alert evaluator: each rule raised once per cause and cleared when the cause ends."""

from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.active_jobs import ActiveJob
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts import rules as R
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.evaluator import (
    NODE_UNHEALTHY_CODE,
    AlertEvaluator,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.metrics import NodeHealth
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    STUCK,
    Failure,
    FailureKind,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import JobState


def evaluator(**thresholds):
    seen = []
    ev = AlertEvaluator(
        R.AlertThresholds(**thresholds),
        run_id="r",
        domains={"t1": "chrome", "t2": "chrome", "t3": "chrome"},
        announce=lambda state, alert: seen.append((state, alert.rule, alert.subject)),
    )
    return ev, seen


def job(key="r-0001", **fields):
    fields.setdefault("handle", key)
    return ActiveJob(job_key=key, task_ids=["t1"], submitted_at=0.0, **fields)


def test_the_six_rules_with_the_reviews_defaults():
    rules = R.rules(R.AlertThresholds())
    assert set(rules) == {
        "job_stuck_no_progress",
        "container_startup_timeout",
        "compute_node_unhealthy",
        "slow_task_execution",
        "high_retry_rate",
        "docker_pull_slow",
    }
    assert [r.name for r in rules.values() if r.priority is R.Priority.CRITICAL] == [
        "job_stuck_no_progress",
        "container_startup_timeout",
        "compute_node_unhealthy",
    ]
    assert "95%" in rules["compute_node_unhealthy"].condition
    assert "300s" in rules["compute_node_unhealthy"].condition
    assert "600s" in rules["job_stuck_no_progress"].condition
    assert "2x" in rules["slow_task_execution"].condition
    assert "20%" in rules["high_retry_rate"].condition


@pytest.mark.parametrize(
    "bad", [{"node_utilisation_pct": 120}, {"retry_rate": 2}, {"pull_slow_s": 0}]
)
def test_bad_thresholds_are_refused(bad):
    with pytest.raises(ValueError):
        R.AlertThresholds(**bad)


def test_a_stuck_job_is_raised_once_and_cleared_when_it_is_closed():
    ev, seen = evaluator()
    stuck = job()
    failure = Failure(FailureKind.TRANSIENT, STUCK, "no worker event for 700s")
    ev.job_given_up(stuck, failure, 10.0)
    ev.job_given_up(stuck, failure, 11.0)
    ev.evaluate(11.0, [stuck], [], 0, 1)
    assert seen == [("raised", "job_stuck_no_progress", "r-0001")]
    ev.evaluate(12.0, [], [], 0, 1)  # the engine closed it
    assert seen[-1] == ("cleared", "job_stuck_no_progress", "r-0001")
    [alert] = ev.snapshot()["history"]
    assert (alert["raised_at"], alert["cleared_at"]) == (10.0, 12.0)
    assert ev.snapshot()["active"] == []


def test_an_unhealthy_node_drains_its_job_and_clears_when_it_cools():
    ev, seen = evaluator(node_unhealthy_for_s=10)
    running = job(handle="job-a", state=JobState.RUNNING)
    hot = NodeHealth("n1", "job-a", {"cpu": [(0.0, 50.0), (5.0, 99.0), (10.0, 99.0)]})
    assert ev.evaluate(10.0, [running], [], 0, 1, [hot]) == []  # 5 s over, limit 10
    hot.series["cpu"].append((15.0, 99.0))
    [(drained, failure)] = ev.evaluate(15.0, [running], [], 0, 1, [hot])
    assert drained is running and failure.code == NODE_UNHEALTHY_CODE and failure.is_transient
    assert seen == [("raised", "compute_node_unhealthy", "n1")]
    ev.evaluate(16.0, [running], [], 0, 1, [hot])  # raised once
    hot.series["cpu"].append((20.0, 10.0))
    assert ev.evaluate(20.0, [], [], 0, 1, [hot]) == []
    assert seen[-1] == ("cleared", "compute_node_unhealthy", "n1")


def test_slow_task_retry_rate_and_pull_warnings():
    ev, seen = evaluator(pull_slow_s=5, retry_rate_min_jobs=2)
    slow = job(in_flight="t3", in_flight_since=0.0, first_event_at=0.0, state=JobState.RUNNING)
    pulling = job("r-0002", state=JobState.STARTING)
    durations = [("chrome", 10.0), ("chrome", 10.0)]
    ev.evaluate(1.0, [slow, pulling], durations, 0, 2)
    assert seen == []
    ev.evaluate(21.0, [slow, pulling], durations, 1, 2)
    assert sorted(seen) == [
        ("raised", "docker_pull_slow", "r-0002"),
        ("raised", "high_retry_rate", "run"),
        ("raised", "slow_task_execution", "t3"),
    ]
    slow.in_flight = None
    pulling.state = JobState.RUNNING
    ev.evaluate(22.0, [slow, pulling], durations, 1, 10)
    assert sorted(seen[3:]) == [
        ("cleared", "docker_pull_slow", "r-0002"),
        ("cleared", "high_retry_rate", "run"),
        ("cleared", "slow_task_execution", "t3"),
    ]
