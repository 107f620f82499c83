# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The eval_run action's side of the run watch: the alert rules, channels and node metrics
built from its arguments, the live dashboard started, and what goes into the report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.evaluator import (
    Alert,
    AlertEvaluator,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.metrics import (
    MetricsReader,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.notifiers import (
    Dispatcher,
    channels_from_settings,
    headline,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.rules import (
    AlertThresholds,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.dashboard.server import (
    DashboardServer,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_watch import RunWatch

# eval_run's alert_thresholds keys (roles/eval: eval_alert_<key>) -> AlertThresholds fields.
THRESHOLD_KEYS = {
    "node_utilisation_pct": "node_utilisation_pct",
    "node_unhealthy_for": "node_unhealthy_for_s",
    "slow_task_factor": "slow_task_factor",
    "retry_rate": "retry_rate",
    "pull_slow_after": "pull_slow_s",
}


def thresholds_from(args: Mapping[str, Any]) -> AlertThresholds:
    given = dict(args.get("alert_thresholds") or {})
    unknown = sorted(set(given) - set(THRESHOLD_KEYS))
    if unknown:
        raise ValueError(f"unknown alert threshold(s) {unknown}; known: {sorted(THRESHOLD_KEYS)}")
    values = {THRESHOLD_KEYS[k]: float(v) for k, v in given.items() if v is not None}
    return AlertThresholds(
        stuck_after_s=float(args["stuck_after"]),
        startup_timeout_s=float(args["startup_timeout"]),
        **values,
    )


def run_watch_for(args: Mapping[str, Any], tier: Any, tasks: list, display: Any) -> RunWatch:
    def announce(state: str, alert: Alert) -> None:
        text = f"ALERT {headline({**alert.to_dict(), 'state': state})} - {alert.message}"
        if state == "raised":
            display.warning(text)
        else:
            display.display(text)

    evaluator = AlertEvaluator(
        thresholds_from(args),
        run_id=args["run_name"],
        domains={task_id: domain for domain, task_id in tasks},
        dispatcher=Dispatcher(channels_from_settings(args.get("alert_notifications") or {})),
        announce=announce,
    )
    reader = None
    source = getattr(tier, "metrics_source", None)
    source = source() if args.get("metrics", True) and callable(source) else None
    if source is not None:
        interval = float(args.get("metrics_interval") or 60)
        grain = float(args.get("metrics_grain") or 60)
        # The window holds the unhealthy-node limit and a read's worth more.
        window = max(evaluator.thresholds.node_unhealthy_for_s + 2 * interval, grain)
        reader = MetricsReader(source, interval_s=interval, grain_s=grain, window_s=window)
    return RunWatch(evaluator, reader)


def start_dashboard(args: Mapping[str, Any], status_file: Any, display: Any):
    if not args.get("dashboard", True):
        return None
    server = DashboardServer(status_file, port=int(args.get("dashboard_port") or 0)).start()
    display.display(
        f"eval_run: live dashboard at {server.url} (eval_dashboard: false turns it off)"
    )
    return server


def watch_report(watch: RunWatch) -> dict[str, Any]:
    report: dict[str, Any] = {"alerts": watch.alerts.snapshot()}
    if watch.metrics is not None:
        m = watch.metrics
        report["metrics"] = {
            "resource_id": m.source.resource_id,
            "requests": m.requests,
            "errors": m.errors,
            "interval_s": m.interval_s,
            "requests_per_minute_budget": round(m.requests_per_minute, 3),
        }
    return report
