"""Cost accounting from measured node time.

A job is billed for the whole time its node was held (acquired -> released), so start-up and idle
time are included. That cost is attributed to the job's completed tasks in proportion to their
durations; node time of jobs that completed nothing is reported as unattributed (waste).
Prices are supplied by the caller (dedicated or low-priority); ``VM_PRICES`` is the fallback table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# USD per node-hour, pay-as-you-go, from the reliability review (seed 004, section 4.1).
VM_PRICES: dict[str, float] = {
    "Standard_D2_v3": 0.096,
    "Standard_D4_v3": 0.192,
    "Standard_D8_v3": 0.384,
    "Standard_E2s_v3": 0.126,
    "Standard_D4s_v5": 0.208,
}


def hourly_price(vm_size: str, prices: Mapping[str, float] | None = None) -> float:
    """Price of one node-hour of ``vm_size``: the caller's table first, then ``VM_PRICES``."""
    for table in (prices or {}, VM_PRICES):
        for name, price in table.items():
            if name.lower() == vm_size.lower():
                return float(price)
    raise KeyError(
        f"no hourly price known for VM size {vm_size!r}; pass one (price_per_node_hour) or use one "
        f"of {sorted(VM_PRICES)}"
    )


@dataclass(frozen=True)
class NodeInterval:
    job_key: str
    acquired_at: float
    released_at: float | None = None  # None: still held

    def seconds(self, now: float) -> float:
        end = self.released_at if self.released_at is not None else now
        return max(0.0, end - self.acquired_at)


@dataclass(frozen=True)
class TaskTiming:
    task_id: str
    job_key: str
    duration_s: float


@dataclass(frozen=True)
class NodeUsage:
    """Node time of the whole pool as the tier measured it."""

    node_seconds: float
    nodes_held: int
    # Of node_seconds, the part still to come (nodes idle until they scale down after the run),
    # which no later measurement covers.
    still_to_come: float = 0.0


@dataclass(frozen=True)
class CostBreakdown:
    price_per_node_hour: float
    node_hours: float
    total_usd: float
    task_costs_usd: dict[str, float] = field(default_factory=dict)
    unattributed_usd: float = 0.0
    completed_tasks: int = 0
    remaining_tasks: int = 0
    cost_per_task_usd: float | None = None
    mean_node_seconds_per_task: float | None = None
    estimate_to_finish_usd: float | None = None
    estimated_total_usd: float | None = None
    current_hourly_rate_usd: float = 0.0
    nodes_held: int = 0

    @property
    def cost_so_far_usd(self) -> float:
        return self.total_usd

    def to_dict(self) -> dict[str, object]:
        return {
            "price_per_node_hour": self.price_per_node_hour,
            "node_hours": round(self.node_hours, 6),
            "total_usd": round(self.total_usd, 6),
            "unattributed_usd": round(self.unattributed_usd, 6),
            "completed_tasks": self.completed_tasks,
            "remaining_tasks": self.remaining_tasks,
            "cost_per_task_usd": _round(self.cost_per_task_usd),
            "mean_node_seconds_per_task": _round(self.mean_node_seconds_per_task),
            "estimate_to_finish_usd": _round(self.estimate_to_finish_usd),
            "estimated_total_usd": _round(self.estimated_total_usd),
            "current_hourly_rate_usd": round(self.current_hourly_rate_usd, 6),
            "nodes_held": self.nodes_held,
            "task_costs_usd": {k: round(v, 6) for k, v in self.task_costs_usd.items()},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def compute_cost(
    price_per_node_hour: float,
    intervals: Sequence[NodeInterval],
    task_timings: Sequence[TaskTiming],
    remaining_tasks: int,
    now: float,
    measured: NodeUsage | None = None,
) -> CostBreakdown:
    """Cost from per-job node intervals, or from the pool's measured node time when the tier
    measures it (``measured``: startup, idle and scale-down included); job intervals then only
    apportion it to tasks, and the rest is unattributed (idle, startup, retried work)."""
    if price_per_node_hour < 0:
        raise ValueError("price_per_node_hour must not be negative")
    per_second = price_per_node_hour / 3600.0
    node_seconds_by_job: dict[str, float] = {}
    nodes_held = 0
    for interval in intervals:
        node_seconds_by_job[interval.job_key] = node_seconds_by_job.get(
            interval.job_key, 0.0
        ) + interval.seconds(now)
        if interval.released_at is None:
            nodes_held += 1
    total_node_seconds = sum(node_seconds_by_job.values())
    if measured is not None:
        total_node_seconds = max(measured.node_seconds, 0.0)
        nodes_held = measured.nodes_held
    total_usd = total_node_seconds * per_second

    timings_by_job: dict[str, list[TaskTiming]] = {}
    for timing in task_timings:
        timings_by_job.setdefault(timing.job_key, []).append(timing)

    task_costs: dict[str, float] = {}
    attributed = 0.0
    for job_key, timings in timings_by_job.items():
        job_usd = node_seconds_by_job.get(job_key, 0.0) * per_second
        durations = [max(0.0, t.duration_s) for t in timings]
        total_duration = sum(durations)
        for timing, duration in zip(timings, durations, strict=True):
            # Equal shares when the worker reported no durations.
            share = duration / total_duration if total_duration > 0 else 1.0 / len(timings)
            task_costs[timing.task_id] = task_costs.get(timing.task_id, 0.0) + job_usd * share
        if job_usd:
            attributed += job_usd
    if attributed > total_usd > 0:
        # Job intervals overlap a measured total that is smaller: scale the shares down.
        task_costs = {k: v * total_usd / attributed for k, v in task_costs.items()}
        attributed = total_usd

    completed = len({t.task_id for t in task_timings})
    mean_node_seconds = total_node_seconds / completed if completed else None
    estimate_to_finish = (
        remaining_tasks * mean_node_seconds * per_second if mean_node_seconds is not None else None
    )
    return CostBreakdown(
        price_per_node_hour=price_per_node_hour,
        node_hours=total_node_seconds / 3600.0,
        total_usd=total_usd,
        task_costs_usd=task_costs,
        unattributed_usd=max(0.0, total_usd - attributed),
        completed_tasks=completed,
        remaining_tasks=remaining_tasks,
        cost_per_task_usd=total_usd / completed if completed else None,
        mean_node_seconds_per_task=mean_node_seconds,
        estimate_to_finish_usd=estimate_to_finish,
        estimated_total_usd=(
            total_usd + estimate_to_finish if estimate_to_finish is not None else None
        ),
        current_hourly_rate_usd=nodes_held * price_per_node_hour,
        nodes_held=nodes_held,
    )
