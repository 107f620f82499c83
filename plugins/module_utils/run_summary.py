# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a run's results add up to, counted in one place: the engine's progress lines, the status
file and the report, and ``eval_run``'s partial summary of a run that stopped."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import CostBreakdown
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (
    Ledger,
    TaskResultRow,
    TaskStatus,
)


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    domain: str | None
    status: str
    score: float
    duration_s: float | None
    error: str | None
    attempts: int
    job_key: str | None


@dataclass(frozen=True)
class DomainSummary:
    domain: str
    total: int
    succeeded: int
    failed: int
    errored: int
    success_rate: float
    mean_score: float


@dataclass(frozen=True)
class ResultSummary:
    """The final results of a run's tasks (those that have one)."""

    total: int  # tasks in the run, with a result or not
    tasks: dict[str, TaskOutcome]
    domains: dict[str, DomainSummary]
    succeeded: int
    failed: int
    errored: int
    mean_score: float
    avg_task_duration_s: float | None

    @property
    def completed(self) -> int:
        return len(self.tasks)

    @property
    def success_rate(self) -> float | None:
        """Of the tasks with a result; None before the first."""
        return self.succeeded / self.completed if self.completed else None


@dataclass(frozen=True)
class RetryRecord:
    at: float
    job_key: str
    handle: str | None
    kind: str
    code: str
    reason: str
    requeued_task_ids: tuple[str, ...]


@dataclass(frozen=True)
class RunResult:
    """A whole run, across its sessions (jobs, retries, span from the first session's start and
    cost); ``session_jobs_submitted`` is what the last session added."""

    run_id: str
    tier: str
    status: str
    total_tasks: int
    tasks: dict[str, TaskOutcome]
    domains: dict[str, DomainSummary]
    succeeded: int
    failed: int
    errored: int
    success_rate: float
    mean_score: float
    retries: list[RetryRecord]
    jobs_submitted: int
    duplicates_ignored: int
    started_at: float
    finished_at: float
    makespan_s: float
    avg_task_duration_s: float | None
    cost: CostBreakdown
    sessions: int = 1
    session_jobs_submitted: int = 0  # by the last session alone
    # WAA's VM boot per job of the last session (startup_checks.BootWatch.report).
    boot: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["cost"] = self.cost.to_dict()
        data["retries"] = [dataclasses.asdict(r) for r in self.retries]
        return data


def _counts(outcomes: Sequence[TaskOutcome]) -> tuple[int, int, int]:
    statuses = [o.status for o in outcomes]
    return (
        statuses.count(TaskStatus.SUCCESS),
        statuses.count(TaskStatus.FAIL),
        statuses.count(TaskStatus.ERROR),
    )


def summarize(
    task_ids: Sequence[str],
    rows: Mapping[str, TaskResultRow],
    attempts: Callable[[str], int] = lambda task_id: 0,
) -> ResultSummary:
    """The results ``rows`` of the run's ``task_ids``, in the run's order."""
    tasks = {
        task_id: TaskOutcome(
            task_id=task_id,
            domain=row.domain,
            status=row.status,
            score=row.score,
            duration_s=row.duration_s,
            error=row.error,
            attempts=attempts(task_id),
            job_key=row.job_key,
        )
        for task_id in task_ids
        if (row := rows.get(task_id)) is not None
    }
    outcomes = list(tasks.values())
    succeeded, failed, errored = _counts(outcomes)
    durations = [o.duration_s for o in outcomes if o.duration_s is not None]
    return ResultSummary(
        total=len(task_ids),
        tasks=tasks,
        domains=_domain_summaries(outcomes),
        succeeded=succeeded,
        failed=failed,
        errored=errored,
        mean_score=statistics.fmean([o.score for o in outcomes]) if outcomes else 0.0,
        avg_task_duration_s=statistics.fmean(durations) if durations else None,
    )


def _domain_summaries(outcomes: list[TaskOutcome]) -> dict[str, DomainSummary]:
    by_domain: dict[str, list[TaskOutcome]] = {}
    for outcome in outcomes:
        by_domain.setdefault(outcome.domain or "unknown", []).append(outcome)
    summaries = {}
    for domain, items in sorted(by_domain.items()):
        succeeded, failed, errored = _counts(items)
        summaries[domain] = DomainSummary(
            domain=domain,
            total=len(items),
            succeeded=succeeded,
            failed=failed,
            errored=errored,
            success_rate=succeeded / len(items),
            mean_score=statistics.fmean([o.score for o in items]),
        )
    return summaries


def ledger_summary(path: str | Path, status: str) -> dict[str, Any]:
    """What the ledger at ``path`` holds, in the report's shape (for a run that stopped before
    the engine could report); empty when there is no ledger."""
    if not Path(path).exists():
        return {}
    with Ledger(path) as ledger:
        rows = ledger.results()
        meta = ledger.run_meta()
        summary = summarize(list(rows), rows, ledger.attempt_count)
        retries = ledger.retries()
        jobs_submitted = ledger.accepted_job_count()
    return {
        "run_id": meta.run_id if meta else None,
        "status": status,
        "tasks": {k: dataclasses.asdict(v) for k, v in summary.tasks.items()},
        "domains": {k: dataclasses.asdict(v) for k, v in summary.domains.items()},
        "succeeded": summary.succeeded,
        "failed": summary.failed,
        "errored": summary.errored,
        "retries": retries,
        "jobs_submitted": jobs_submitted,
        "sessions": meta.sessions if meta else 0,
    }
