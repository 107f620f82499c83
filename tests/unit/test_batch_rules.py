"""Batch's auto-scale formula subset and task exit conditions."""

from __future__ import annotations

import pytest

from localazure.batch import autoscale
from localazure.batch.exit_conditions import job_action


def test_fixed_targets():
    result = autoscale.evaluate(
        "$TargetDedicatedNodes = 2; $TargetLowPriorityNodes=1", autoscale.Samples()
    )
    assert (result.dedicated, result.low_priority) == (2, 1)


def test_formula_on_pending_tasks_with_min_max():
    formula = (
        "pending = $PendingTasks.GetSample(1);$TargetDedicatedNodes = max(0, min(pending / 2, 4));"
    )
    assert autoscale.evaluate(formula, autoscale.Samples(pending_tasks=5)).dedicated == 2
    assert autoscale.evaluate(formula, autoscale.Samples(pending_tasks=50)).dedicated == 4


@pytest.mark.parametrize(
    "formula",
    [
        "$TargetDedicatedNodes",
        "$TargetDedicatedNodes = __import__('os')",
        "$X = 1/0",
        "$TargetDedicatedNodes = -1",
    ],
)
def test_bad_formulas_are_refused(formula):
    with pytest.raises(autoscale.FormulaError):
        autoscale.evaluate(formula, autoscale.Samples())


def test_exit_conditions_choose_the_job_action():
    conditions = {
        "exitCodes": [{"code": 3, "exitOptions": {"jobAction": "terminate"}}],
        "exitCodeRanges": [{"start": 10, "end": 20, "exitOptions": {"jobAction": "disable"}}],
        "default": {"jobAction": "none"},
    }
    assert job_action(conditions, 3) == "terminate"
    assert job_action(conditions, 12) == "disable"
    assert job_action(conditions, 1) == "none"
    assert job_action(None, 3) == "none"
    assert job_action({"default": {"jobAction": "terminate"}}, 0) == "none"
    assert job_action({"default": {"jobAction": "terminate"}}, 2) == "terminate"
