# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""When an alert is raised and when it is cleared.

An alert is one rule and one subject (a job, a task, a node, the run): it is raised once when
its cause appears, and cleared when the cause ends (the job is closed, the task finishes, the
node's figures fall back, the retry rate drops). Every raise and clear is announced (Ansible's
display) and kept with its times for the status file and the report; a raised alert is sent
to the notification channels (one message per alert).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts import rules as R
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.metrics import NodeHealth
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.notifiers import (
    Dispatcher,
    headline,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    STARTUP_TIMEOUT,
    STUCK,
    Failure,
    FailureKind,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import JobState

log = logging.getLogger(__name__)

# The failure a job drained off an unhealthy node is closed with (transient: its tasks move).
NODE_UNHEALTHY_CODE = "NodeUnhealthy"
_RUN = "run"


@dataclass
class Alert:
    rule: str
    priority: str
    subject: str
    message: str
    condition: str
    action: str
    raised_at: float
    # When the cause began, as far as the engine saw it (the job's last event, its start, the
    # node's first point over the threshold): raised_at - cause_since is the detection time.
    cause_since: float | None = None
    cleared_at: float | None = None
    cleared_because: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["raised_at_iso"] = _iso(self.raised_at)
        data["cleared_at_iso"] = _iso(self.cleared_at) if self.cleared_at is not None else None
        return data


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


class AlertEvaluator:
    def __init__(
        self,
        thresholds: R.AlertThresholds,
        *,
        run_id: str = "",
        domains: Mapping[str, str] | None = None,
        dispatcher: Dispatcher | None = None,
        announce: Callable[[str, Alert], None] | None = None,
    ) -> None:
        self.thresholds = thresholds
        self.rules = R.rules(thresholds)
        self.run_id = run_id
        self._domains = dict(domains or {})
        self._dispatcher = dispatcher or Dispatcher([])
        self._announce = announce or _log_announce
        self._active: dict[tuple[str, str], Alert] = {}
        self.history: list[Alert] = []
        self._starting_since: dict[str, float] = {}

    # causes the engine reports -------------------------------------------------------------

    def job_given_up(self, job: Any, failure: Failure, now: float) -> None:
        """The engine's health check gave up on a job: the two job rules' causes."""
        rule = {STUCK: R.JOB_STUCK, STARTUP_TIMEOUT: R.STARTUP_TIMEOUT}.get(failure.code)
        if rule == R.JOB_STUCK:
            since = job.last_event_at
            if job.in_flight is not None and job.client_idle_s > self.thresholds.stuck_after_s:
                # The client's silence on the task in flight (it may have been quiet before).
                since = max(
                    (job.last_event_at or now) - job.client_idle_s, job.in_flight_since or 0.0
                )
        elif rule == R.STARTUP_TIMEOUT:
            since = job.running_since or max(job.startup_from, job.submitted_at)
        else:
            return
        self._raise(rule, job.job_key, f"job {job.job_key}: {failure.message}", now, since)

    # the periodic evaluation ---------------------------------------------------------------

    def evaluate(
        self,
        now: float,
        jobs: Iterable[Any],
        durations: Iterable[tuple[str | None, float | None]],
        retried_jobs: int,
        jobs_submitted: int,
        nodes: Iterable[NodeHealth] = (),
    ) -> list[tuple[Any, Failure]]:
        """Raise and clear by the run's state now; return the jobs to drain off unhealthy
        nodes, each with the failure to close it with."""
        active = {job.job_key: job for job in jobs}
        for rule in (R.JOB_STUCK, R.STARTUP_TIMEOUT):
            # The job was cancelled and its tasks requeued: that cause is over.
            for key, alert in list(self._active.items()):
                if key[0] == rule and key[1] not in active:
                    self._clear(alert, now, "the job was cancelled and its tasks requeued")
        self._reconcile(R.PULL_SLOW, self._pulls(now, active), now, "the job left Preparing")
        self._reconcile(
            R.SLOW_TASK, self._slow_tasks(now, active, durations), now, "the task finished"
        )
        self._reconcile(
            R.HIGH_RETRY_RATE,
            self._retry_rate(retried_jobs, jobs_submitted),
            now,
            "the retry rate fell back",
        )
        nodes = list(nodes)
        unhealthy = self._unhealthy_nodes(nodes)
        self._reconcile(
            R.NODE_UNHEALTHY,
            unhealthy,
            now,
            "the node's figures fell back",
            since={n.node_id: n.over_since(self.thresholds.node_utilisation_pct) for n in nodes},
        )
        by_handle = {job.handle: job for job in active.values() if job.handle}
        drains = []
        for node in nodes:
            if node.node_id in unhealthy and node.run_id in by_handle:
                message = unhealthy[node.node_id]
                drains.append(
                    (
                        by_handle[node.run_id],
                        Failure(FailureKind.TRANSIENT, NODE_UNHEALTHY_CODE, message),
                    )
                )
        return drains

    def _pulls(self, now: float, active: Mapping[str, Any]) -> dict[str, str]:
        for key in list(self._starting_since):
            job = active.get(key)
            if job is None or job.state is not JobState.STARTING:
                del self._starting_since[key]
        found = {}
        for key, job in active.items():
            if job.state is JobState.STARTING and job.first_event_at is None:
                since = self._starting_since.setdefault(key, now)
                if now - since > self.thresholds.pull_slow_s:
                    found[key] = (
                        f"job {key} has been preparing (pulling its image) for "
                        f"{now - since:.0f}s (limit {self.thresholds.pull_slow_s:g}s)"
                    )
        return found

    def _slow_tasks(
        self,
        now: float,
        active: Mapping[str, Any],
        durations: Iterable[tuple[str | None, float | None]],
    ) -> dict[str, str]:
        by_domain: dict[str, list[float]] = {}
        for domain, duration in durations:
            if domain and duration:
                by_domain.setdefault(domain, []).append(duration)
        found = {}
        for job in active.values():
            task, since = job.in_flight, job.in_flight_since
            if task is None or since is None:
                continue
            samples = by_domain.get(self._domains.get(task) or "", [])
            if len(samples) < self.thresholds.slow_task_min_samples:
                continue
            mean = statistics.fmean(samples)
            if now - since > self.thresholds.slow_task_factor * mean:
                found[task] = (
                    f"task {task} ({self._domains.get(task)}) on job {job.job_key} has run "
                    f"{now - since:.0f}s, over {self.thresholds.slow_task_factor:g}x its "
                    f"domain's mean of {mean:.0f}s"
                )
        return found

    def _retry_rate(self, retried: int, submitted: int) -> dict[str, str]:
        t = self.thresholds
        if submitted < t.retry_rate_min_jobs or retried / submitted <= t.retry_rate:
            return {}
        return {
            _RUN: f"{retried} of {submitted} jobs retried ({retried / submitted:.0%}, "
            f"limit {t.retry_rate:.0%})"
        }

    def _unhealthy_nodes(self, nodes: Iterable[NodeHealth]) -> dict[str, str]:
        t = self.thresholds
        found = {}
        for node in nodes:
            over = node.over_for(t.node_utilisation_pct)
            worst = max(over.items(), key=lambda kv: kv[1], default=None)
            if worst and worst[1] >= t.node_unhealthy_for_s:
                figure = worst[0]
                found[node.node_id] = (
                    f"node {node.node_id} {figure} at {node.latest.get(figure, 0):.1f}%, above "
                    f"{t.node_utilisation_pct:g}% for {worst[1]:.0f}s"
                    + (f" (job {node.run_id})" if node.run_id else "")
                )
        return found

    # raising and clearing ------------------------------------------------------------------

    def _reconcile(
        self,
        rule: str,
        wanted: Mapping[str, str],
        now: float,
        why: str,
        since: Mapping[str, float | None] | None = None,
    ) -> None:
        for key, alert in list(self._active.items()):
            if key[0] == rule and key[1] not in wanted:
                self._clear(alert, now, why)
        for subject, message in wanted.items():
            self._raise(rule, subject, message, now, (since or {}).get(subject, now))

    def _raise(
        self, rule_name: str, subject: str, message: str, now: float, since: float | None = None
    ) -> None:
        if (rule_name, subject) in self._active:
            return
        rule = self.rules[rule_name]
        alert = Alert(
            rule=rule.name,
            priority=rule.priority.value,
            subject=subject,
            message=message,
            condition=rule.condition,
            action=rule.action,
            raised_at=now,
            cause_since=since,
        )
        self._active[(rule_name, subject)] = alert
        self.history.append(alert)
        self._emit("raised", alert)

    def _clear(self, alert: Alert, now: float, why: str) -> None:
        self._active.pop((alert.rule, alert.subject), None)
        alert.cleared_at, alert.cleared_because = now, why
        self._emit("cleared", alert)

    def _emit(self, state: str, alert: Alert) -> None:
        self._announce(state, alert)
        # One message per alert, when it is raised; its clearing is in the status and report.
        if state == "raised":
            self._dispatcher.dispatch({**alert.to_dict(), "state": state, "run_id": self.run_id})

    # what the status file and the report show ----------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "active": [a.to_dict() for a in self._active.values()],
            "history": [a.to_dict() for a in self.history],
            "rules": [
                {
                    "name": r.name,
                    "priority": r.priority.value,
                    "condition": r.condition,
                    "action": r.action,
                }
                for r in self.rules.values()
            ],
            "notifications": {
                "channels": [c.name for c in self._dispatcher.channels],
                "sent": self._dispatcher.sent,
                "failed": self._dispatcher.failed,
            },
        }

    def close(self) -> None:
        self._dispatcher.close()


def _log_announce(state: str, alert: Alert) -> None:
    event = {**alert.to_dict(), "state": state}
    text = f"ALERT {headline(event)} - {alert.message}"
    if state == "raised":
        log.warning(text)
    else:
        log.info(text)
