# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One row per worker job: its startup (submitted until its first task), each task attempt
(start, end, outcome, failure code), and how the job ended; from the ledger, plus the task in
flight of each active job."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def timeline(ledger: Any, active_jobs: Iterable[Any], now: float) -> list[dict[str, Any]]:
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in ledger.attempts():
        attempts.setdefault(a.job_key, []).append(
            {
                "task_id": a.task_id,
                "start": a.started_at,
                "end": a.ended_at,
                "outcome": a.outcome,
                "code": a.failure_code,
            }
        )
    active = {job.job_key: job for job in active_jobs}
    rows = []
    for job in ledger.jobs():
        if job.handle is None and job.ended_at is None and job.job_key not in active:
            continue
        tasks = sorted(attempts.get(job.job_key, []), key=lambda t: t["start"] or t["end"])
        live = active.get(job.job_key)
        first_event = live.first_event_at if live is not None else None
        if live is not None and live.in_flight and live.in_flight_since:
            tasks.append(
                {
                    "task_id": live.in_flight,
                    "start": live.in_flight_since,
                    "end": None,
                    "outcome": "running",
                    "code": None,
                }
            )
        starts = [t["start"] for t in tasks if t["start"]]
        rows.append(
            {
                "job_key": job.job_key,
                "submitted_at": job.submitted_at,
                "node_started_at": job.node_started_at,
                "first_task_at": min(starts) if starts else first_event,
                "ended_at": job.ended_at,
                "state": job.state,
                "failure_code": job.failure_code,
                "task_count": len(job.task_ids),
                "tasks": tasks,
            }
        )
    return rows
