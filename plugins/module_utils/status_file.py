"""The live dashboard file (the fields of the reliability review's ``EnhancedLiveTracker``).

Written atomically (temporary file in the same directory, then ``os.replace``) so that a viewer
polling the file never reads half of it. No fsync: the file is rewritten on every poll, and losing
the latest version to a power cut is harmless (the ledger is the durable record).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TaskCounts:
    total: int
    completed: int
    succeeded: int
    failed: int
    errored: int
    running: int
    pending: int


@dataclass(frozen=True)
class PerformanceFigures:
    avg_task_duration: float | None
    task_success_rate: float | None
    retry_rate: float | None


@dataclass(frozen=True)
class CostFigures:
    current_usd: float
    estimated_total_usd: float | None
    cost_per_task_usd: float | None
    current_hourly_rate: float


@dataclass(frozen=True)
class InfrastructureFigures:
    active_workers: int
    pending_jobs: int


@dataclass(frozen=True)
class DashboardSnapshot:
    status: str
    tasks: TaskCounts
    performance: PerformanceFigures
    cost: CostFigures
    infrastructure: InfrastructureFigures
    timestamp: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(self.timestamp, tz=UTC).isoformat(),
            "status": self.status,
            "tasks": asdict(self.tasks),
            "performance": _rounded(asdict(self.performance), 4),
            "cost": _rounded(asdict(self.cost), 4),
            "infrastructure": asdict(self.infrastructure),
        }
        data.update(self.extra)
        return data


def _rounded(values: dict[str, Any], digits: int) -> dict[str, Any]:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in values.items()}


def write_status(path: str | Path, snapshot: DashboardSnapshot | dict[str, Any]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = snapshot.to_dict() if isinstance(snapshot, DashboardSnapshot) else snapshot
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def read_status(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
