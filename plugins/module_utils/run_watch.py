# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the engine shows while it runs, beyond its own bookkeeping: the alert rules evaluated
each round, the nodes' Azure Monitor figures read on their slower cadence, and the series the
dashboard draws (tasks done and cost over time, the workers' timeline). The engine calls three
hooks: ``tick`` each round (it returns the jobs to drain off unhealthy nodes), ``job_given_up``
when a health check cancels a job, and ``status`` for the status file."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.evaluator import (
    AlertEvaluator,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.alerts.metrics import (
    MetricsReader,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.dashboard.timeline import (
    timeline,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import Failure

_MAX_POINTS = 600


class RunWatch:
    def __init__(self, alerts: AlertEvaluator, metrics: MetricsReader | None = None) -> None:
        self.alerts = alerts
        self.metrics = metrics
        self._done: list[list[float]] = []
        self._cost: list[list[float]] = []

    def tick(
        self,
        now: float,
        jobs: Iterable[Any],
        results: Iterable[Any],
        retries: Iterable[Any],
        jobs_submitted: int,
    ) -> list[tuple[Any, Failure]]:
        jobs = list(jobs)
        nodes = self.metrics.read(now) if self.metrics is not None else []
        return self.alerts.evaluate(
            now,
            jobs,
            [(r.domain, r.duration_s) for r in results],
            len({r.job_key for r in retries}),
            jobs_submitted,
            nodes,
        )

    def job_given_up(self, job: Any, failure: Failure, now: float) -> None:
        self.alerts.job_given_up(job, failure, now)

    def status(
        self,
        now: float,
        *,
        ledger: Any,
        active_jobs: Iterable[Any],
        done: int,
        cost_usd: float,
        started_at: float,
        workers: int,
    ) -> dict[str, Any]:
        """The status file's ``alerts``, ``metrics`` and ``dashboard`` sections."""
        _append(self._done, now, done)
        _append(self._cost, now, round(cost_usd, 6))
        return {
            "alerts": self.alerts.snapshot(),
            "metrics": self.metrics.snapshot() if self.metrics is not None else None,
            "dashboard": {
                "started_at": started_at,
                "now": now,
                "workers": workers,
                "done_series": self._done,
                "cost_series": self._cost,
                "timeline": timeline(ledger, active_jobs, now) if ledger is not None else [],
            },
        }

    def close(self) -> None:
        self.alerts.close()


def _append(series: list[list[float]], now: float, value: float) -> None:
    if series and series[-1][1] == value and len(series) > 1 and series[-2][1] == value:
        series[-1][0] = now  # a flat stretch is two points
        return
    series.append([now, value])
    if len(series) > _MAX_POINTS:
        del series[1 : len(series) - _MAX_POINTS + 1 : 2]
