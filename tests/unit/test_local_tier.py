from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import JobState
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.local import LocalTier
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    parse_lines,
)
from localazure.workload import taskset


def live_group_members(pgid):
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(stat.parent.name))
    return members


def wait_terminal(tier, handle, timeout=20.0):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        status = tier.status(handle)
        lines += tier.read_new_lines(handle)
        if status.state.terminal:
            return status, lines + tier.read_new_lines(handle)
        time.sleep(0.02)
    raise AssertionError(f"{handle} did not finish")


def test_runs_the_real_worker_with_the_standin(tmp_path):
    tasks = taskset.list_tasks()[:3]
    with LocalTier(
        tmp_path, heartbeat_interval=0.05, extra_env={"WAA_STANDIN_TIME_SCALE": "0.002"}
    ) as tier:
        handle = tier.submit("run-0001", [t for _, t in tasks])
        assert tier.submit("run-0001", ["ignored"]) == handle  # idempotent per job key
        status, lines = wait_terminal(tier, handle)
    assert status.state is JobState.COMPLETED
    assert status.node_started_at <= status.node_released_at
    results = [e for e in parse_lines(lines) if e.event == "task_result"]
    assert [e.task_id for e in results] == [t for _, t in tasks]
    for domain, task_id in tasks:
        assert list((tmp_path / "results").glob(f"**/{domain}/{task_id}/result.txt"))
    assert "[Example ID]" in (tmp_path / "logs" / "run-0001.log").read_text()


def test_lines_are_returned_once(tmp_path):
    with LocalTier(
        tmp_path, heartbeat_interval=0.05, extra_env={"WAA_STANDIN_TIME_SCALE": "0.002"}
    ) as tier:
        handle = tier.submit("j", [taskset.list_tasks()[0][1]])
        _, lines = wait_terminal(tier, handle)
        assert tier.read_new_lines(handle) == []
    assert len(lines) == len(set(lines))


def test_failed_worker_reports_exit_code_and_log_tail(tmp_path):
    class CrashingTier(LocalTier):
        def worker_argv(self, job_key, task_ids):
            return [
                sys.executable,
                "-c",
                "import sys; print('boom: disk full', file=sys.stderr); sys.exit(3)",
            ]

    with CrashingTier(tmp_path) as tier:
        status, _ = wait_terminal(tier, tier.submit("j", ["a"]))
    assert status.state is JobState.FAILED
    assert status.error_code == "WorkerExited"
    assert "code 3" in status.error_message and "boom: disk full" in status.error_message


def test_cancel_stops_the_whole_process_group(tmp_path):
    domain, task_id = taskset.list_tasks()[0]
    with LocalTier(
        tmp_path,
        heartbeat_interval=0.05,
        cancel_grace_s=2,
        extra_env={"WAA_STANDIN_STUCK_TASK": task_id},
    ) as tier:
        handle = tier.submit("j", [task_id])
        deadline = time.time() + 10
        while not any("task_started" in line for line in tier.read_new_lines(handle)):
            assert time.time() < deadline
            time.sleep(0.02)
        pgid = tier.pids()[handle]
        while len(live_group_members(pgid)) < 2:  # the worker and its hanging client
            assert time.time() < deadline
            time.sleep(0.02)
        tier.cancel(handle)
        status, _ = wait_terminal(tier, handle)
        assert status.state is JobState.CANCELED
        deadline = time.time() + 5
        while live_group_members(pgid):
            assert time.time() < deadline, live_group_members(pgid)
            time.sleep(0.02)
        assert os.getpgid(os.getpid()) != pgid
        assert status.node_released_at is not None
        tier.cancel(handle)  # cancelling an ended job is harmless
