# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the report says about the tiers a run used, from its ledger and the tier's own record:
which tier ran which task (a job's handle names its member in a pool of tiers), each tier's node
hours and cost, what spot / low-priority capacity saved against dedicated prices, and what its
evictions cost (the node time of the jobs that were preempted)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import NODE_PREEMPTED
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import JobRow, Ledger

LOW_PRIORITY = ("low_priority", "lowpriority", "spot")


def _tier_of(handle: str | None, default: str) -> str:
    if handle and "/" in handle:
        return handle.split("/", 1)[0]
    return default


def _job_seconds(job: JobRow) -> float:
    start = job.node_started_at or job.submitted_at
    end = job.node_released_at or job.ended_at or start
    return max(0.0, end - start)


def tier_report(tier: Any, ledger_path: str | Path, node_hours: float) -> dict[str, Any]:
    details = tier.describe()
    default = details.get("tier", getattr(tier, "name", "tier"))
    path = Path(ledger_path)
    if not path.exists():
        return {}
    with Ledger(path) as ledger:
        jobs = {job.job_key: job for job in ledger.jobs()}
        results = ledger.results()
    tasks_by_tier: dict[str, list[str]] = {}
    for task_id, row in sorted(results.items()):
        job = jobs.get(row.job_key or "")
        tasks_by_tier.setdefault(_tier_of(job.handle if job else None, default), []).append(task_id)

    if hasattr(tier, "member_costs"):
        usage = tier.member_costs(time.time())
        members = details.get("members", {})
    else:
        price = float(details.get("price_per_node_hour") or 0.0)
        usage = {default: {"node_hours": node_hours, "usd": node_hours * price}}
        members = {default: details}

    spot: dict[str, Any] = {}
    for name, info in members.items():
        if str(info.get("priority", "")).lower() not in LOW_PRIORITY:
            continue
        price = float(info.get("price_per_node_hour") or 0.0)
        dedicated = float(info.get("dedicated_price_per_node_hour") or 0.0)
        hours = float(usage.get(name, {}).get("node_hours", 0.0))
        evicted = [
            j
            for j in jobs.values()
            if j.failure_code == NODE_PREEMPTED and _tier_of(j.handle, default) == name
        ]
        eviction_hours = sum(_job_seconds(j) for j in evicted) / 3600.0
        spot[name] = {
            "node_hours": round(hours, 6),
            "price_per_node_hour": price,
            "dedicated_price_per_node_hour": dedicated,
            "saved_usd": round(max(0.0, hours * (dedicated - price)), 6),
            "evictions": len(evicted),
            "eviction_cost_usd": round(eviction_hours * price, 6),
        }
    return {
        "tasks_by_tier": {name: len(ids) for name, ids in tasks_by_tier.items()},
        "task_tiers": {task: name for name, ids in tasks_by_tier.items() for task in ids},
        "tier_costs": usage,
        "spot": spot,
    }
