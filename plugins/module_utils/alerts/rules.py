# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The six alert rules of the reliability review (section 5.3), with their thresholds.

Every threshold is a variable of the ``eval`` role (``eval_alert_*``, documented in
``roles/eval/defaults/main.yml``) whose default is the review's figure. The two job rules use
the engine's own health limits (``eval_stuck_after``, ``eval_startup_timeout``): the alert is
the engine's health check made visible, and its action (cancel, retry elsewhere) is the one the
engine takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

JOB_STUCK = "job_stuck_no_progress"
STARTUP_TIMEOUT = "container_startup_timeout"
NODE_UNHEALTHY = "compute_node_unhealthy"
SLOW_TASK = "slow_task_execution"
HIGH_RETRY_RATE = "high_retry_rate"
PULL_SLOW = "docker_pull_slow"


class Priority(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"


@dataclass(frozen=True)
class AlertThresholds:
    """The review's figures; seconds unless named otherwise."""

    stuck_after_s: float = 600.0
    startup_timeout_s: float = 600.0
    node_utilisation_pct: float = 95.0
    node_unhealthy_for_s: float = 300.0
    slow_task_factor: float = 2.0
    # Completed tasks of a domain needed before its mean counts.
    slow_task_min_samples: int = 2
    retry_rate: float = 0.20
    # Jobs submitted before a retry rate means anything.
    retry_rate_min_jobs: int = 5
    pull_slow_s: float = 300.0

    def __post_init__(self) -> None:
        positive = (
            "stuck_after_s",
            "startup_timeout_s",
            "node_unhealthy_for_s",
            "slow_task_factor",
            "pull_slow_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"alert threshold {name} must be positive")
        if not 0 < self.node_utilisation_pct <= 100:
            raise ValueError("node_utilisation_pct must be within (0, 100]")
        if not 0 <= self.retry_rate <= 1:
            raise ValueError("retry_rate must be a fraction within [0, 1]")


@dataclass(frozen=True)
class AlertRule:
    name: str
    priority: Priority
    condition: str
    action: str


def rules(t: AlertThresholds) -> dict[str, AlertRule]:
    """The rules with their conditions stated in the thresholds in force."""
    return {
        rule.name: rule
        for rule in (
            AlertRule(
                JOB_STUCK,
                Priority.CRITICAL,
                f"no worker event for {t.stuck_after_s:g}s while the job is running",
                "cancel the job, retry its unfinished tasks on another job",
            ),
            AlertRule(
                STARTUP_TIMEOUT,
                Priority.CRITICAL,
                f"no worker event within {t.startup_timeout_s:g}s of the job's start "
                "(the container never started)",
                "cancel the job, retry its tasks; investigate the Docker image",
            ),
            AlertRule(
                NODE_UNHEALTHY,
                Priority.CRITICAL,
                f"CPU, memory or disk of a node above {t.node_utilisation_pct:g}% for "
                f"{t.node_unhealthy_for_s:g}s (Azure Monitor metrics)",
                "drain the node: cancel the job running on it and move its tasks",
            ),
            AlertRule(
                SLOW_TASK,
                Priority.WARNING,
                f"a task running longer than {t.slow_task_factor:g}x its domain's mean duration",
                "logged for investigation; the task is not cancelled",
            ),
            AlertRule(
                HIGH_RETRY_RATE,
                Priority.WARNING,
                f"more than {t.retry_rate:.0%} of the jobs retried (from "
                f"{t.retry_rate_min_jobs} jobs on)",
                "investigate the infrastructure (the retries' codes are in the report)",
            ),
            AlertRule(
                PULL_SLOW,
                Priority.WARNING,
                f"a job preparing (image pull) for more than {t.pull_slow_s:g}s",
                "consider importing the image into ACR near the compute (role acr)",
            ),
        )
    }
