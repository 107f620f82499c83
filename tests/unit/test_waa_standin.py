from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from localazure.workload import task_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_standin(tmp_path, tasks, extra_env=None, timeout=20, args=()):
    meta = tmp_path / "meta.json"
    grouped: dict[str, list[str]] = {}
    for domain, task_id in tasks:
        grouped.setdefault(domain, []).append(task_id)
    meta.write_text(json.dumps(grouped))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), WAA_STANDIN_TIME_SCALE="0.002")
    env.update(extra_env or {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "localazure.workload.waa_standin",
            "--test_all_meta_path",
            str(meta),
            "--result_dir",
            str(tmp_path / "res"),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_writes_waa_result_layout_with_modelled_outcome(tmp_path):
    tasks = task_model.list_tasks()[:4]
    proc = run_standin(tmp_path, tasks, args=["--model", "gpt-4o", "--agent_name", "navi"])
    assert proc.returncode == 0, proc.stderr
    for domain, task_id in tasks:
        result = tmp_path / "res/pyautogui/a11y_tree/gpt-4o" / domain / task_id / "result.txt"
        expected = 1.0 if task_model.modelled_success(domain, task_id) else 0.0
        assert float(result.read_text()) == expected
        assert f"[Example ID]: {task_id}" in proc.stdout
    assert "[Domain]: chrome" in proc.stdout and "Result: " in proc.stdout


def test_seed_changes_outcomes_deterministically(tmp_path):
    tasks = task_model.list_tasks()[:30]
    proc = run_standin(tmp_path, tasks, {"WAA_STANDIN_SEED": "7", "WAA_STANDIN_TIME_SCALE": "0"})
    assert proc.returncode == 0
    base = tmp_path / "res/pyautogui/a11y_tree/navi"
    scores = {t: float((base / d / t / "result.txt").read_text()) for d, t in tasks}
    assert scores == {t: float(task_model.modelled_success(d, t, seed=7)) for d, t in tasks}


def test_finished_tasks_are_skipped_like_waa(tmp_path):
    tasks = task_model.list_tasks()[:1]
    domain, task_id = tasks[0]
    result = tmp_path / "res/pyautogui/a11y_tree/navi" / domain / task_id / "result.txt"
    result.parent.mkdir(parents=True)
    result.write_text("0.5\n")
    proc = run_standin(tmp_path, tasks)
    assert proc.returncode == 0 and "Skipping finished example" in proc.stdout
    assert result.read_text() == "0.5\n"


def test_crash_fault_exits_1_with_traceback_and_no_result(tmp_path):
    tasks = task_model.list_tasks()[:2]
    crash_domain, crash_id = tasks[0]
    proc = run_standin(tmp_path, tasks, {"WAA_STANDIN_CRASH_TASK": crash_id})
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and crash_id in proc.stderr
    assert not list((tmp_path / "res").glob(f"**/{crash_id}/result.txt"))


def test_stuck_fault_prints_first_line_then_hangs_silently(tmp_path):
    domain, task_id = task_model.list_tasks()[0]
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({domain: [task_id]}))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), WAA_STANDIN_STUCK_TASK=task_id)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "localazure.workload.waa_standin",
            "--test_all_meta_path",
            str(meta),
            "--result_dir",
            str(tmp_path / "res"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "Running 1 task(s)" in proc.stdout.readline()
        assert "[Domain]: " + domain in proc.stdout.readline()
        time.sleep(0.5)
        assert proc.poll() is None  # still hanging
    finally:
        proc.kill()
        rest = proc.communicate()[0]
    assert rest == ""  # nothing after the first line
