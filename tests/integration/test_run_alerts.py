"""The run's alerts, node metrics and dashboard, end to end on the Azure ML tier: a stuck job, a
container that never starts and a node driven over 95% CPU are injected; the engine raises
job_stuck_no_progress, container_startup_timeout and compute_node_unhealthy, each within its
limit plus one poll of its cause, a loopback webhook and an SMTP server get one message per
alert, the metric reads stay within their budget in the emulator's request log, and headless
Chromium draws the live dashboard during the run and the HTML report after it."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from aml_setup import build
from azure.mgmt.monitor import MonitorManagementClient
from monitor_helpers import CANVAS_INK, SmtpReceiver, WebhookReceiver, chromium, wait_for
from test_aml_evaluation import engine_config

from ansible_collections.openadapt.azure_eval.plugins.module_utils.dashboard.report import (
    write_report,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.dashboard.server import (
    DashboardServer,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import EvaluationEngine
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_watch_setup import (
    run_watch_for,
)
from localazure.workload.task_model import list_tasks

pytestmark = pytest.mark.integration

RUN = "alerts"
TASKS = list_tasks()[:9]
STARTUP_S, STUCK_S, POLL_S = 3.0, 3.0, 0.2
NODE_FOR_S, METRICS_EVERY_S = 2.0, 1.0
# The worker's heartbeat (aml_setup.FAST_JOB_ENV); room for the tier's reads (the AML tier's
# run-history and status cadence) on a loaded machine: with a load average of 10 the stuck and
# node alerts came 1 to 5 s after their limit, the startup timeout up to 11 s (the engine's own
# health check: the alert is raised the moment it cancels the job).
HEARTBEAT_S, SLACK_S = 0.25, 15.0
CHARTS = ("chart-progress", "chart-cost", "chart-timeline", "chart-nodes")


class Display:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(("warning", text))

    def display(self, text):
        self.lines.append(("display", text))


def page_numbers(browser) -> dict:
    ids = ["count-total", "count-completed", "count-succeeded", "count-failed", "cost-current"]
    return {i: browser.find_element("id", i).text for i in ids}


def test_injected_faults_raise_alerts_notify_and_draw(azure, tmp_path):
    world = build(azure, cluster=dict(max_nodes=3))
    for fault in (
        {"fault": "stuck", "job": "0001$"},
        {"fault": "never_starts", "job": "0002$"},
        {"fault": "overload", "metric": "cpu", "job": "0003$", "after_s": 0},
    ):
        azure.admin("POST", "ml/faults", fault)
    hook, smtp = WebhookReceiver(), SmtpReceiver()
    tier = world.tier(RUN, job_environment={"WAA_STANDIN_TIME_SCALE": "0.3"})
    display = Display()
    args = {
        "run_name": RUN,
        "stuck_after": STUCK_S,
        "startup_timeout": STARTUP_S,
        "alert_thresholds": {"node_unhealthy_for": NODE_FOR_S},
        "alert_notifications": {
            "webhooks": [{"url": hook.url, "format": "slack"}],
            "email": {
                "host": "127.0.0.1",
                "port": smtp.port,
                "from": "waa@example.org",
                "to": ["ops@example.org"],
            },
        },
        "metrics": True,
        "metrics_interval": METRICS_EVERY_S,
        "metrics_grain": 1,
    }
    watch = run_watch_for(args, tier, TASKS, display)
    status_file = tmp_path / "status.json"
    config = engine_config(
        RUN,
        tier.price_per_node_hour,
        workers=3,
        scheduling="static",
        startup_timeout=STARTUP_S,
        stuck_after=STUCK_S,
        poll_interval=POLL_S,
        status_file=status_file,
        watch=watch,
    )
    engine = EvaluationEngine(
        tier, TASKS, tmp_path / "ledger.sqlite3", config, handle_signals=False
    )
    dashboard = DashboardServer(status_file).start()
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=engine.run()), daemon=True)
    first_request = len(azure.requests())
    browser, _profile = chromium()
    shots = Path(tmp_path / "screenshots")
    shots.mkdir()
    try:
        runner.start()
        # The live page, while the run goes: it draws and refreshes without a reload.
        wait_for(lambda: status_file.exists(), 60, "the first status")
        browser.get(dashboard.url)
        wait_for(
            lambda: int(browser.execute_script("return document.body.dataset.rendered || 0")) >= 2,
            30,
            "two renders of the live page",
        )
        assert browser.find_element("id", "mode").text == "live"
        assert browser.find_element("id", "count-total").text == str(len(TASKS))
        assert all(browser.execute_script(CANVAS_INK, c) > 0 for c in CHARTS[:3])
        browser.save_screenshot(str(shots / "live.png"))
        runner.join(240)
        assert not runner.is_alive(), "the run did not end"
        result = outcome["result"]
        watch.close()
    finally:
        dashboard.stop()

    # The engine's metric reads, in the emulator's request log (before this test reads any).
    reads = [
        r
        for r in azure.requests(first_request)
        if (r.get("path") or "").endswith("/providers/Microsoft.Insights/metrics")
    ]
    status = json.loads(status_file.read_text())
    history = status["alerts"]["history"]
    (tmp_path / "detection.json").write_text(
        json.dumps({a["rule"]: a["raised_at"] - (a["cause_since"] or 0) for a in history})
    )
    by_rule = {}
    for alert in history:
        by_rule.setdefault(alert["rule"], []).append(alert)
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        jobs = {j.job_key[-4:]: j for j in ledger.jobs()}
        attempts = ledger.attempts()
    try:
        # job_stuck_no_progress: the first job, cancelled at the alert, within the limit + a poll
        [stuck] = by_rule["job_stuck_no_progress"]
        assert stuck["subject"] == jobs["0001"].job_key
        assert stuck["raised_at"] == pytest.approx(jobs["0001"].ended_at, abs=POLL_S * 3)
        [hung] = [a for a in attempts if a.job_key == jobs["0001"].job_key]
        # (the WAA client's silence began at or before the task's start)
        assert stuck["raised_at"] - hung.started_at <= STUCK_S + HEARTBEAT_S + POLL_S + SLACK_S
        silent_for = stuck["raised_at"] - stuck["cause_since"]
        assert STUCK_S < silent_for <= STUCK_S + HEARTBEAT_S + POLL_S + SLACK_S, silent_for
        [startup] = by_rule["container_startup_timeout"]
        assert startup["subject"] == jobs["0002"].job_key
        # From the engine's startup clock (the job seen Running, or a node free for it).
        assert startup["raised_at"] - jobs["0002"].submitted_at > STARTUP_S
        waited = startup["raised_at"] - startup["cause_since"]
        assert STARTUP_S < waited <= STARTUP_S + POLL_S + SLACK_S, waited
        [node] = by_rule["compute_node_unhealthy"]
        assert jobs["0003"].failure_code == "NodeUnhealthy"
        assert node["raised_at"] == pytest.approx(jobs["0003"].ended_at, abs=POLL_S * 3)
        for alert in (stuck, startup, node):
            assert alert["cleared_at"] is not None and alert["cleared_at"] >= alert["raised_at"]
        # compute_node_unhealthy within its limit plus one metric read of the cause: from the
        # node's first point over 95% in Azure Monitor.
        monitor = azure.mgmt_client(MonitorManagementClient)
        metrics = monitor.metrics.list(
            world.workspace_id,
            timespan="PT10M",
            interval=timedelta(seconds=1),
            metricnames="CpuUtilizationPercentage",
            aggregation="Average",
            filter=f"InstanceId eq '{node['subject']}'",
        )
        hot = [
            p.time_stamp.timestamp()
            for s in metrics.value[0].timeseries
            for p in s.data
            if (p.average or 0) > 95
        ]
        assert hot, "no CPU point over 95%"
        delay = node["raised_at"] - min(hot)
        # The limit, one read, the 1 s grain of the points, and slack for a loaded machine.
        assert NODE_FOR_S <= delay <= NODE_FOR_S + METRICS_EVERY_S + 1.0 + SLACK_S, delay
        # One message per alert on each channel.
        wait_for(lambda: len(smtp.messages) >= len(history), 30, "the emails")
        assert len(hook.bodies) == len(history) and len(smtp.messages) == len(history)
        subjects = sorted(
            str(email.message_from_bytes(m.content, policy=email.policy.default)["subject"])
            for m in smtp.messages
        )
        assert sorted(b["text"] for b in hook.bodies) == subjects
        for rule in (
            "job_stuck_no_progress",
            "container_startup_timeout",
            "compute_node_unhealthy",
        ):
            assert any(rule in s for s in subjects)
        assert any(kind == "warning" and "ALERT [critical]" in text for kind, text in display.lines)
        # Every task still got its one result; the metric reads kept to their budget.
        assert result.succeeded + result.failed + result.errored == len(TASKS)
        span = result.finished_at - result.started_at
        assert 1 <= len(reads) <= span / METRICS_EVERY_S + 2
        assert watch.metrics.requests == len(reads)

        # The final HTML report: self-contained, its numbers the report's, its charts drawn.
        report = write_report(status_file, tmp_path / f"{RUN}.html")
        assert "<script src=" not in report.read_text()
        browser.get(report.as_uri())
        wait_for(
            lambda: browser.execute_script("return document.body.dataset.rendered"),
            30,
            "the report's render",
        )
        numbers = page_numbers(browser)
        assert numbers["count-total"] == str(result.total_tasks)
        assert numbers["count-succeeded"] == str(result.succeeded)
        assert numbers["count-failed"] == str(result.failed)
        assert numbers["cost-current"] == f"${result.cost.total_usd:.4f}"
        for chart in CHARTS:
            assert browser.execute_script(CANVAS_INK, chart) > 0, chart
        rows = browser.find_elements("css selector", "#alerts-table tbody tr")
        assert {r.get_attribute("data-rule") for r in rows} >= {
            "job_stuck_no_progress",
            "container_startup_timeout",
            "compute_node_unhealthy",
        }
        browser.save_screenshot(str(shots / "report.png"))
        assert (shots / "report.png").stat().st_size > 10_000
    finally:
        browser.quit()
        hook.close()
        smtp.close()
