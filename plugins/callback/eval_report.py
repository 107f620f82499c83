# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: eval_report
type: aggregate
short_description: Writes the report of every evaluation run at the end of the playbook
version_added: "0.1.0"
description:
  - Collects the results of C(openadapt.azure_eval.eval_run) tasks, successful or failed, and at
    the end of the playbook writes one JSON report per run (results per task and per domain,
    success rate, retries and why, timings and cost) and prints a readable summary.
  - A failed run (a permanent failure, an unhealthy tier) is reported with the results it has.
requirements:
  - enable it in C(callbacks_enabled) (the project's ansible.cfg does)
options:
  report_dir:
    description: Directory for the JSON reports; relative paths are relative to the playbook.
    default: reports
    type: path
    env:
      - name: EVAL_REPORT_DIR
    ini:
      - section: callback_eval_report
        key: report_dir
"""

import json
import time
from collections import Counter
from pathlib import Path

from ansible.plugins.callback import CallbackBase

from ansible_collections.openadapt.azure_eval.plugins.module_utils.dashboard.report import (
    write_report,
)

ACTION_NAMES = ("eval_run", "openadapt.azure_eval.eval_run")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "openadapt.azure_eval.eval_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._runs = []
        self._base_dir = Path.cwd()

    def v2_playbook_on_start(self, playbook):
        self._base_dir = Path(playbook._basedir)

    def v2_runner_on_ok(self, result):
        self._collect(result, failed=False)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._collect(result, failed=True)

    def _collect(self, result, failed):
        if result._task.action not in ACTION_NAMES:
            return
        data = result._result
        if "evaluation" not in data:
            return
        self._runs.append(
            {
                "run_id": data["evaluation"].get("run_id"),
                "failed": failed,
                "message": data.get("msg"),
                "evaluation": data["evaluation"],
                "tier": data.get("tier_details", {}),
                "ledger": data.get("ledger"),
                "status_file": data.get("status_file"),
            }
        )

    def v2_playbook_on_stats(self, stats):
        if not self._runs:
            return
        report_dir = Path(self.get_option("report_dir"))
        if not report_dir.is_absolute():
            report_dir = self._base_dir / report_dir
        report_dir.mkdir(parents=True, exist_ok=True)
        for run in self._runs:
            report = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **run}
            path = report_dir / f"{run['run_id'] or 'evaluation'}.json"
            path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
            html = self._html_report(run, path.with_suffix(".html"))
            for line in summary_lines(run, path, html):
                self._display.display(line)

    def _html_report(self, run, target):
        """The dashboard's pictures of the run's final status, beside the JSON report."""
        status_file = run.get("status_file")
        if not status_file or not Path(status_file).is_file():
            return None
        try:
            return write_report(status_file, target)
        except (OSError, ValueError) as err:
            self._display.warning(f"eval_report: no HTML report for {run['run_id']}: {err}")
            return None


def summary_lines(run, path, html=None):
    ev = run["evaluation"]
    tasks = ev.get("tasks") or {}
    total = ev.get("total_tasks", len(tasks))
    status = "FAILED: " + (run["message"] or "") if run["failed"] else ev.get("status", "")
    lines = [
        "",
        f"WAA evaluation {run['run_id']} on {run['tier'].get('tier', '?')}: {status}",
        f"  tasks {total}: {ev.get('succeeded', 0)} succeeded, {ev.get('failed', 0)} failed, "
        f"{ev.get('errored', 0)} errors, {total - len(tasks)} without a result"
        + (f"; success rate {ev['success_rate']:.1%}" if "success_rate" in ev else ""),
    ]
    domains = ev.get("domains") or {}
    if domains:
        lines.append(f"  {'domain':<20} {'tasks':>5} {'ok':>4} {'rate':>7}")
        for name in sorted(domains):
            d = domains[name]
            lines.append(
                f"  {name:<20} {d['total']:>5} {d['succeeded']:>4} {d['success_rate']:>7.1%}"
            )
    retries = ev.get("retries") or []
    if retries:
        reasons = Counter(r.get("code") for r in retries)
        lines.append(
            f"  retries {len(retries)}: " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common())
        )
    if "makespan_s" in ev:
        avg = ev.get("avg_task_duration_s")
        lines.append(
            f"  time: makespan {ev['makespan_s']:.1f}s"
            + (f", mean task {avg:.1f}s" if avg else "")
            + f", {ev.get('jobs_submitted', 0)} jobs"
        )
    boot = ev.get("boot") or {}
    booted = [j["boot_s"] for j in (boot.get("jobs") or {}).values() if j.get("boot_s") is not None]
    if booted:
        lines.append(
            f"  WAA VM boot: median {boot['median_boot_s']:.1f}s, max {boot['max_boot_s']:.1f}s "
            f"over {len(booted)} jobs (per job in the report's boot.jobs)"
        )
    warm = ev.get("warm_pool") or {}
    if warm:
        lines.append(
            f"  warm pool: {warm['healthy']} of {warm['scaled_to']} nodes healthy in "
            f"{warm['ready_s']:.1f}s"
            + (
                f"; unhealthy: {', '.join(warm['unhealthy_nodes'])}"
                if warm["unhealthy_nodes"]
                else ""
            )
        )
    cost = ev.get("cost") or {}
    if cost:
        lines.append(
            f"  cost: ${cost.get('total_usd') or 0:.4f} for {cost.get('node_hours') or 0:.4f} node-hours "
            f"at ${cost.get('price_per_node_hour') or 0:.3f}/h; ${cost.get('cost_per_task_usd') or 0:.5f} per task; "
            f"${cost.get('unattributed_usd') or 0:.4f} not spent on tasks (startup, idle, retries)"
        )
    alerts = (ev.get("alerts") or {}).get("history") or []
    if alerts:
        raised = Counter(a["rule"] for a in alerts)
        lines.append(
            f"  alerts {len(alerts)}: " + ", ".join(f"{k} x{v}" for k, v in raised.most_common())
        )
    lines.append(f"  report: {path}")
    if html is not None:
        lines.append(f"  HTML report (timeline, cost, alerts, node metrics): {html}")
    return lines
