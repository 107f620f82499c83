from __future__ import annotations

import json

from ansible_collections.openadapt.azure_eval.plugins.module_utils.status_file import (
    CostFigures,
    DashboardSnapshot,
    InfrastructureFigures,
    PerformanceFigures,
    TaskCounts,
    read_status,
    write_status,
)


def snapshot(completed=3):
    return DashboardSnapshot(
        status="running",
        timestamp=1768743963.0,
        tasks=TaskCounts(
            total=10, completed=completed, succeeded=2, failed=1, errored=0, running=2, pending=5
        ),
        performance=PerformanceFigures(
            avg_task_duration=412.123456, task_success_rate=2 / 3, retry_rate=0.1
        ),
        cost=CostFigures(
            current_usd=0.5,
            estimated_total_usd=1.7,
            cost_per_task_usd=0.1667,
            current_hourly_rate=0.384,
        ),
        infrastructure=InfrastructureFigures(active_workers=2, pending_jobs=1),
        extra={"run_id": "waa-1"},
    )


def test_writes_the_dashboard_fields(tmp_path):
    path = tmp_path / "status" / "live.json"
    write_status(path, snapshot())
    data = read_status(path)
    assert data["timestamp"].startswith("2026-01-18T")
    assert data["status"] == "running" and data["run_id"] == "waa-1"
    assert data["tasks"] == {
        "total": 10,
        "completed": 3,
        "succeeded": 2,
        "failed": 1,
        "errored": 0,
        "running": 2,
        "pending": 5,
    }
    assert set(data["performance"]) == {"avg_task_duration", "task_success_rate", "retry_rate"}
    assert data["performance"]["task_success_rate"] == 0.6667
    assert set(data["cost"]) == {
        "current_usd",
        "estimated_total_usd",
        "cost_per_task_usd",
        "current_hourly_rate",
    }
    assert data["infrastructure"] == {"active_workers": 2, "pending_jobs": 1}


def test_replace_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "live.json"
    write_status(path, snapshot(1))
    write_status(path, snapshot(7))
    assert json.loads(path.read_text())["tasks"]["completed"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["live.json"]
