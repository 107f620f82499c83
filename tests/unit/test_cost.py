from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import (
    VM_PRICES,
    NodeInterval,
    TaskTiming,
    compute_cost,
    hourly_price,
)


def test_price_table_from_the_review():
    assert VM_PRICES["Standard_D4_v3"] == 0.192
    assert hourly_price("standard_d4s_v5") == 0.208
    assert hourly_price("Standard_D4_v3", {"Standard_D4_v3": 0.04}) == 0.04  # low-priority
    with pytest.raises(KeyError, match="no hourly price"):
        hourly_price("Standard_NC6")


def test_node_time_including_startup_and_idle_is_billed_and_attributed():
    price = 3.6  # 0.001 USD per node-second keeps the arithmetic readable
    intervals = [
        NodeInterval("j1", acquired_at=0.0, released_at=1000.0),  # 1000 s
        NodeInterval("j2", acquired_at=100.0, released_at=600.0),  # 500 s, failed: no tasks
    ]
    timings = [TaskTiming("a", "j1", 300.0), TaskTiming("b", "j1", 100.0)]
    cost = compute_cost(price, intervals, timings, remaining_tasks=4, now=2000.0)
    assert cost.total_usd == pytest.approx(1.5)
    assert cost.node_hours == pytest.approx(1500 / 3600)
    # j1's whole node time (1.0 USD) is split 3:1 by task duration
    assert cost.task_costs_usd == pytest.approx({"a": 0.75, "b": 0.25})
    assert cost.unattributed_usd == pytest.approx(0.5)
    assert cost.cost_per_task_usd == pytest.approx(0.75)
    assert cost.mean_node_seconds_per_task == pytest.approx(750.0)
    assert cost.estimate_to_finish_usd == pytest.approx(4 * 750 * 0.001)
    assert cost.estimated_total_usd == pytest.approx(1.5 + 3.0)
    assert cost.nodes_held == 0 and cost.current_hourly_rate_usd == 0.0


def test_nodes_still_held_are_billed_up_to_now():
    cost = compute_cost(
        0.192,
        [NodeInterval("j1", 0.0, None), NodeInterval("j2", 0.0, None)],
        [],
        remaining_tasks=10,
        now=1800.0,
    )
    assert cost.total_usd == pytest.approx(0.192)  # two nodes for half an hour
    assert cost.current_hourly_rate_usd == pytest.approx(0.384)
    assert cost.estimate_to_finish_usd is None and cost.cost_per_task_usd is None


def test_zero_durations_share_equally_and_dict_is_json_ready():
    cost = compute_cost(
        3.6,
        [NodeInterval("j", 0.0, 10.0)],
        [TaskTiming("a", "j", 0.0), TaskTiming("b", "j", 0.0)],
        0,
        now=10.0,
    )
    assert cost.task_costs_usd == pytest.approx({"a": 0.005, "b": 0.005})
    data = cost.to_dict()
    assert data["total_usd"] == pytest.approx(0.01) and data["estimate_to_finish_usd"] == 0.0
