"""The warm pool on a scripted tier: per-node times, unhealthy nodes, the minimum given back, a
failure no node got past stopping the run."""

from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    PermanentFailure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    BaseTier,
    JobState,
    JobStatus,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.warm_pool import warm_pool
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    format_event,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedPool(BaseTier):
    """Warm-up jobs that run 2 s after submission and end 1 s later, as ``outcome`` says."""

    name = "scripted"
    failure_codes: dict = {}

    def __init__(self, clock: Clock, outcomes: dict[str, str]) -> None:
        self.clock, self.outcomes = clock, outcomes
        self.minimum, self.scaled, self.cancelled = 0, [], []
        self.submitted: dict[str, float] = {}

    def scale_to(self, min_nodes: int) -> int:
        previous, self.minimum = self.minimum, min_nodes
        self.scaled.append(min_nodes)
        return previous

    def submit_warm_up(self, job_key: str) -> str:
        self.submitted[job_key] = self.clock()
        return job_key

    def status(self, handle: str) -> JobStatus:
        age = self.clock() - self.submitted[handle]
        running_at = self.submitted[handle] + 2 if age >= 2 else None
        outcome = self.outcomes.get(handle[-1], "ok")
        if outcome == "hang" or age < 3:
            state = JobState.RUNNING if running_at else JobState.QUEUED
        else:
            state = JobState.COMPLETED if outcome != "pull" else JobState.FAILED
        return JobStatus(
            state,
            error_code="ImagePullTransientError" if state is JobState.FAILED else None,
            error_message="503 from the registry" if state is JobState.FAILED else None,
            running_at=running_at,
        )

    def read_new_lines(self, handle: str) -> list[str]:
        age = self.clock() - self.submitted[handle]
        if age < 3 or getattr(self, f"_read_{handle}", False):
            return []
        setattr(self, f"_read_{handle}", True)
        outcome = self.outcomes.get(handle[-1], "ok")
        ts = self.submitted[handle] + 2.5
        if outcome == "image":
            return [
                format_event(
                    "failed",
                    "w",
                    ts,
                    code="GoldenImageMissing",
                    message="no data.img",
                    task_id=None,
                )
            ]
        if outcome in ("hang", "pull"):
            return []
        return [
            format_event("image_ready", "w", ts, path="/storage", files=["data.img"], bytes=1),
            format_event("warm_up", "w", ts, node=f"tvm-{handle[-1]}"),
            format_event("finished", "w", ts, completed=0),
        ]

    def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)


def test_every_node_is_timed_and_the_minimum_is_given_back():
    clock = Clock()
    tier = ScriptedPool(clock, {})
    report = warm_pool(tier, 3, "r", timeout=60, poll_interval=0.5, clock=clock, sleep=clock.sleep)
    summary = report.to_dict()
    assert tier.scaled == [3, 0]
    assert summary["healthy"] == 3 and summary["unhealthy_nodes"] == []
    assert {n["node"] for n in summary["nodes"]} == {"tvm-1", "tvm-2", "tvm-3"}
    node = summary["nodes"][0]
    assert (node["start_s"], node["check_s"]) == (2.0, 0.5) and node["ready_s"] >= 3.0


def test_nodes_that_fail_or_hang_are_unhealthy_and_the_rest_serve():
    clock = Clock()
    tier = ScriptedPool(clock, {"2": "pull", "3": "hang"})
    report = warm_pool(tier, 3, "r", timeout=10, poll_interval=0.5, clock=clock, sleep=clock.sleep)
    summary = report.to_dict()
    assert summary["healthy"] == 1
    assert summary["unhealthy_nodes"] == ["r-warmup-0002", "r-warmup-0003"]
    assert "did not finish" in summary["nodes"][2]["error"]
    assert "ImagePullTransientError" in summary["nodes"][1]["error"]
    assert tier.cancelled == ["r-warmup-0003"] and tier.minimum == 0


def test_a_failure_no_node_got_past_stops_the_run():
    clock = Clock()
    tier = ScriptedPool(clock, {"1": "image", "2": "image"})
    with pytest.raises(PermanentFailure) as raised:
        warm_pool(tier, 2, "r", timeout=60, poll_interval=0.5, clock=clock, sleep=clock.sleep)
    assert raised.value.failure.code == "GoldenImageMissing"
    assert tier.minimum == 0
