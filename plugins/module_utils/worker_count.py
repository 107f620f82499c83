# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How many workers a run needs: the evaluation guide's ``calculate_optimal_workers`` (seed 004,
section 6.2) with real durations instead of a fixed 8 minutes a task.

    workers = min(ceil(sum of expected task minutes / target minutes), quota)

Expected minutes per task: the median duration of its domain measured in earlier ledgers when
there is one, else the guide's complexity prior (simple 4, medium 8, complex 12 minutes). The
choice carries its arithmetic for the report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.rightsizing import (
    DEFAULT_PROFILE,
    class_of,
)

PRIOR_MINUTES = {"simple": 4.0, "medium": 8.0, "complex": 12.0}
CHOICES = ("fixed", "advise", "choose")


@dataclass(frozen=True)
class WorkerChoice:
    workers: int
    optimal: int
    quota: int | None
    tasks: int
    total_task_minutes: float
    target_minutes: float
    measured_domains: int
    arithmetic: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "optimal": self.optimal,
            "quota": self.quota,
            "tasks": self.tasks,
            "total_task_minutes": round(self.total_task_minutes, 2),
            "target_minutes": self.target_minutes,
            "measured_domains": self.measured_domains,
            "arithmetic": self.arithmetic,
        }


def measured_minutes(ledgers: Iterable[str | Path]) -> dict[str, float]:
    """Each domain's median task duration (minutes) in the given ledgers."""
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger

    durations: dict[str, list[float]] = {}
    for path in ledgers:
        if not Path(path).exists():
            continue
        with Ledger(path) as ledger:
            for row in ledger.results().values():
                if row.domain and row.duration_s and row.status in ("success", "fail"):
                    durations.setdefault(row.domain, []).append(row.duration_s / 60.0)
    return {d: statistics.median(v) for d, v in durations.items()}


def calculate_optimal_workers(
    task_domains: Sequence[str | None],
    target_hours: float,
    quota: int | None,
    measured: Mapping[str, float] | None = None,
    profile: Mapping[str, Sequence[str]] | None = None,
) -> WorkerChoice:
    if profile is None:
        profile = DEFAULT_PROFILE
    if target_hours <= 0:
        raise ValueError(f"eval_target_hours must be positive, not {target_hours!r}")
    measured = dict(measured or {})
    minutes = [
        measured[d] if d in measured else PRIOR_MINUTES[class_of(d, profile)] for d in task_domains
    ]
    total = sum(minutes)
    target = target_hours * 60.0
    optimal = max(1, math.ceil(total / target)) if minutes else 1
    workers = min(optimal, quota) if quota else optimal
    used = sorted({d for d in task_domains if d in measured})
    arithmetic = (
        f"{len(minutes)} tasks x {total / max(len(minutes), 1):.2f} min (mean; "
        f"{len(used)} domain(s) measured, the rest from the complexity prior) = {total:.1f} min; "
        f"/ target {target:.0f} min = {total / target:.2f} -> ceil {optimal}"
        + (f"; quota {quota} -> {workers}" if quota else "")
    )
    return WorkerChoice(workers, optimal, quota, len(minutes), total, target, len(used), arithmetic)
