#!/usr/bin/env python3
"""What running a task costs the worker beyond the task itself: one WAA client process per task
against one client for the whole job (``WAA_CLIENT_BATCH=1``), with the stand-in's sleeps at
zero, so the time left is process starts and the worker's own bookkeeping.

    .venv/bin/python benchmarks/client_overhead.py [--tasks 40] [--repeats 3]

Prints the median wall time per task of each mode. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from localazure.workload import task_model  # noqa: E402

WORKER = ROOT / "worker" / "waa_worker.py"


def per_task_seconds(task_ids: list[str], batch: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="client-overhead-") as tmp:
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            WAA_CLIENT_CMD=f"{shlex.quote(sys.executable)} -m localazure.workload.waa_standin",
            WAA_CLIENT_BATCH="1" if batch else "0",
            WAA_STANDIN_TIME_SCALE="0",
        )
        argv = [
            sys.executable,
            str(WORKER),
            "--worker-id",
            "bench",
            "--task-ids",
            ",".join(task_ids),
            "--test-all-meta",
            str(task_model.SYNTHETIC_TEST_ALL),
            "--result-dir",
            str(Path(tmp) / "results"),
        ]
        began = time.monotonic()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        return (time.monotonic() - began) / len(task_ids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    task_ids = [task_id for _, task_id in task_model.list_tasks()[: args.tasks]]
    for label, batch in (("one client per task", False), ("one client per job", True)):
        runs = [per_task_seconds(task_ids, batch) for _ in range(args.repeats)]
        print(
            f"{label:<20} {1000 * statistics.median(runs):7.1f} ms per task "
            f"(runs: {', '.join(f'{1000 * r:.1f}' for r in runs)}; {len(task_ids)} tasks)"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
