"""A stand-in for WAA's client entry point (``python /client/run.py``).

The real client drives a Windows VM inside the container, which cannot run here. This stand-in
keeps its command line, its result layout and the shape of its log, and replaces the agent with
deterministic models of duration and success (``task_model``):

    python -m localazure.workload.waa_standin --test_all_meta_path F --result_dir D \\
        [--action_space pyautogui --observation_type a11y_tree --model navi]

writes ``D/<action_space>/<observation_type>/<model>/<domain>/<task_id>/result.txt``.

Environment: ``WAA_STANDIN_SEED`` (default 0), ``WAA_STANDIN_TIME_SCALE`` (seconds of sleep per
simulated minute, default 0.05), and two faults: ``WAA_STANDIN_STUCK_TASK=<task_id>`` prints the
task's first line and then hangs without output, ``WAA_STANDIN_CRASH_TASK=<task_id>`` exits with
code 1 and a traceback before writing a result.

With ``WAA_VM_READY_URL`` set (the probe of the VM the worker booted, the stand-in VM
``localazure.workload.waa_vm``), each task
starts by asking the VM, as WAA's client talks to the server inside the VM for every step: a VM
that does not answer ends the client with code 1 and the connection error, before the task has a
result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from localazure.workload.task_model import (
    DEFAULT_SEED,
    DEFAULT_TIME_SCALE,
    modelled_minutes,
    modelled_success,
)

# Simulated minutes per agent step (WAA agents take one step every one to two minutes).
MINUTES_PER_STEP = 1.5


def log(message: str, level: str = "INFO", lineno: int = 0) -> None:
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    print(f"[{stamp} {level} run/{lineno}-MainProcess] {message}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Stand-in for WAA's run.py")
    parser.add_argument("--test_all_meta_path", required=True)
    parser.add_argument("--result_dir", default="./results")
    parser.add_argument("--action_space", default="pyautogui")
    parser.add_argument("--observation_type", default="a11y_tree")
    parser.add_argument("--model", default="navi")
    parser.add_argument("--max_steps", type=int, default=15)
    # WAA's run.py takes many more options (agent, emulator address...); they do not matter here.
    args, _unknown = parser.parse_known_args(argv)
    return args


def run_task(
    domain: str,
    task_id: str,
    task_dir: Path,
    seed: int,
    time_scale: float,
    max_steps: int,
) -> None:
    log(f"[Domain]: {domain}", lineno=101)
    if os.environ.get("WAA_STANDIN_STUCK_TASK") == task_id:
        threading.Event().wait()  # hangs forever, silently: what a wedged VM looks like
    log(f"[Example ID]: {task_id}", lineno=102)
    log(f"[Instruction]: synthetic {domain} task {task_id[:8]}", lineno=103)
    minutes = modelled_minutes(domain, task_id, seed)
    steps = max(1, min(max_steps, round(minutes / MINUTES_PER_STEP)))
    crash = os.environ.get("WAA_STANDIN_CRASH_TASK") == task_id
    for step in range(1, steps + 1):
        time.sleep(minutes * time_scale / steps)
        log(f"Step {step}: pyautogui action {step} of {steps}", lineno=57)
        if crash and step >= (steps + 1) // 2:
            crash_now(task_id)
    success = modelled_success(domain, task_id, seed)
    score = 1.0 if success else 0.0
    log(f"Reward: {score:.2f}", lineno=61)
    log(f"Done: {True}", lineno=62)
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "result.txt").write_text(f"{score}\n", encoding="utf-8")
    log(f"Result: {score:.2f}", lineno=79)


def vm_answers(url: str) -> bool:
    # Imported here: urllib.request is a third of the client's start, and most runs probe no VM.
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def vm_gone(task_id: str, url: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(
        "Traceback (most recent call last):\n"
        '  File "/client/desktop_env/controllers/python.py", line 31, in get_screenshot\n'
        '    response = requests.get(self.http_server + "/screenshot")\n'
        f"requests.exceptions.ConnectionError: the Windows VM's server ({url}) did not answer "
        f"while running task {task_id}\n"
    )
    sys.stderr.flush()
    sys.exit(1)


def crash_now(task_id: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(
        "Traceback (most recent call last):\n"
        '  File "/client/run.py", line 215, in test\n'
        "    lib_run_single.run_single_example(agent, env, example, max_steps, instruction)\n"
        '  File "/client/lib_run_single.py", line 40, in run_single_example\n'
        "    obs, reward, done, info = env.step(action, args.sleep_after_execution)\n"
        f"RuntimeError: simulated WAA client crash on task {task_id} "
        "(WAA_STANDIN_CRASH_TASK)\n"
    )
    sys.stderr.flush()
    sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    seed = int(os.environ.get("WAA_STANDIN_SEED", DEFAULT_SEED))
    time_scale = float(os.environ.get("WAA_STANDIN_TIME_SCALE", DEFAULT_TIME_SCALE))
    meta = json.loads(Path(args.test_all_meta_path).read_text(encoding="utf-8"))
    base = Path(args.result_dir) / args.action_space / args.observation_type / args.model
    total = sum(len(ids) for ids in meta.values())
    log(f"Running {total} task(s) from {args.test_all_meta_path}", lineno=180)
    for domain, task_ids in meta.items():
        for task_id in task_ids:
            task_dir = base / domain / task_id
            if (task_dir / "result.txt").exists():
                # WAA's run.py skips examples that already have a result.
                log(f"Skipping finished example {domain}/{task_id}", lineno=190)
                continue
            probe = os.environ.get("WAA_VM_READY_URL")
            if probe and not vm_answers(probe):
                vm_gone(task_id, probe)
            run_task(domain, task_id, task_dir, seed, time_scale, args.max_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
