"""The engine's watch hooks on a scripted tier: a stuck job's alert in the status file with its
times, the dashboard's series and timeline; the HTML report is one self-contained file."""

from __future__ import annotations

import json

import pytest
from test_engine import make_engine, worker_plan

from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.evaluator import (
    AlertEvaluator,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.rules import (
    AlertThresholds,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.dashboard.report import (
    render_report,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_watch import RunWatch
from ansible_collections.openadapt.azure_eval.plugins.module_utils.status_file import read_status


def test_a_stuck_job_is_an_alert_in_the_status_file_with_the_dashboards_series(tmp_path):
    def plan(key, ids, n):
        return worker_plan(key, ids, stop_after=1) if n == 1 else worker_plan(key, ids)

    announced = []
    watch = RunWatch(
        AlertEvaluator(
            AlertThresholds(stuck_after_s=300),
            run_id="run",
            announce=lambda state, alert: announced.append((state, alert.rule)),
        )
    )
    engine, tier, _ = make_engine(tmp_path, plan, workers=1, stuck_after=300, watch=watch)
    engine.run()
    status = read_status(tmp_path / "status.json")
    [alert] = [a for a in status["alerts"]["history"] if a["rule"] == "job_stuck_no_progress"]
    assert alert["subject"].endswith("-0001") and alert["priority"] == "critical"
    assert alert["raised_at"] - alert["cause_since"] > 300
    assert alert["cleared_at"] >= alert["raised_at"]
    assert ("raised", "job_stuck_no_progress") in announced
    assert ("cleared", "job_stuck_no_progress") in announced
    board = status["dashboard"]
    assert board["done_series"][-1][1] == status["tasks"]["completed"]
    assert board["cost_series"][-1][1] == pytest.approx(status["cost"]["current_usd"], abs=1e-4)
    rows = {row["job_key"][-4:]: row for row in board["timeline"]}
    assert rows["0001"]["failure_code"] == "Stuck"
    assert any(t["outcome"] == "success" for t in rows["0002"]["tasks"])
    assert status["metrics"] is None  # the scripted tier has no Azure Monitor source

    page = render_report(status)
    assert '<script src="' not in page and 'href="assets/' not in page
    assert "Chart.js v4.5.1" in page  # vendored, inlined with its licence banner
    embedded = page.split('<script id="dashboard-data" type="application/json">')[1]
    assert json.loads(embedded.split("</script>")[0])["run_id"] == "run"
