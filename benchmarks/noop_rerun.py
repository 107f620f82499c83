#!/usr/bin/env python3
"""A re-run of ``site.yml -e tier=aml`` that has nothing to do, against the 20 s target
(issue 8, section 6).

    .venv/bin/python benchmarks/noop_rerun.py [--tasks 4] [--repeats 3] [--json out.json]

Starts its own localazure, runs ``site.yml -e tier=aml`` once on ``--tasks`` tasks (everything
is created and the evaluation completes), then re-runs the same command ``--repeats`` times in
each of three ways, interleaved so that the machine's load falls on all three alike (each
"warm" run comes right after one that used warm-python):

- **warm**: as a user's re-run right after the first (warm-python's server is up);
- **first after idle**: warm-python's servers stopped first, as when the re-run comes more than
  ``WARM_PYTHON_IDLE_SECONDS`` later: the first Azure module of each environment runs cold;
- **off**: ``WARM_PYTHON=0``, every module in a fresh interpreter.

Every re-run must end with ``changed=0`` and submit no job. Printed: the median wall time of
each, its ratio to the target and to ``off``, and the requests of one re-run by class (cloud
metadata, token and OpenID discovery, the rest). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "integration")]

from playbook_runner import Playground, Run, metadata_and_token_requests  # noqa: E402

from localazure.testing import RunningEmulator  # noqa: E402

TARGET_SECONDS = 20.0
MODES = ("warm", "first after idle", "off")


def stop_warm_servers(runtime: Path) -> None:
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(runtime) in part for part in process.info["cmdline"] or []):
                process.kill()
                process.wait(10)


def request_classes(requests: list[dict]) -> dict[str, int]:
    metadata, tokens = metadata_and_token_requests(requests)
    return {"metadata": metadata, "token": tokens, "other": len(requests) - metadata - tokens}


def rerun(
    playground: Playground, command: list[str], mode: str, runtime: Path
) -> tuple[Run, dict[str, int]]:
    if mode == "first after idle":
        stop_warm_servers(runtime)
    env = {"XDG_RUNTIME_DIR": str(runtime), **({"WARM_PYTHON": "0"} if mode == "off" else {})}
    jobs = len(playground.jobs())
    mark = playground.emulator.request_seq()
    run = playground.play(*command, env=env)
    recap = run.recap()
    if run.returncode != 0 or recap["changed"] != 0:
        raise SystemExit(f"the {mode} re-run was not a no-op:\n{run.tail()}")
    if len(playground.jobs()) != jobs:
        raise SystemExit(f"the {mode} re-run submitted a job")
    return run, request_classes(playground.requests_since(mark))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="noop-rerun-", dir="/tmp") as tmp:
        root = Path(tmp)
        runtime = root / "run"  # a Unix socket's path must stay short
        runtime.mkdir(mode=0o700)
        emulator = RunningEmulator(root / "localazure").start()
        emulator.activate()  # this process's SDK clients (the job list) use it too
        try:
            playground = Playground(emulator, root)
            command = ["-e", "tier=aml", "-e", f"eval_max_tasks={args.tasks}"]
            first = playground.play(*command, env={"XDG_RUNTIME_DIR": str(runtime)})
            if first.returncode != 0:
                raise SystemExit(f"the first run failed:\n{first.tail()}")
            print(f"first run ({args.tasks} tasks, everything created): {first.seconds:.1f} s")
            seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
            requests: dict[str, dict[str, int]] = {}
            for _ in range(args.repeats):
                # "warm" last: right after a run that used warm-python, as after the first run.
                for mode in ("off", "first after idle", "warm"):
                    run, requests[mode] = rerun(playground, command, mode, runtime)
                    seconds[mode].append(run.seconds)
        finally:
            stop_warm_servers(runtime)
            emulator.stop()

    medians = {mode: statistics.median(values) for mode, values in seconds.items()}
    print(f"no-op re-run of site.yml -e tier=aml, median of {args.repeats} (changed=0 each):")
    for mode in MODES:
        print(
            f"  {mode:17} {medians[mode]:5.1f} s  {medians[mode] / TARGET_SECONDS:.2f}x the "
            f"{TARGET_SECONDS:.0f} s target  {medians[mode] / medians['off']:.2f}x off  "
            f"runs {', '.join(f'{s:.1f}' for s in seconds[mode])}"
        )
    print(f"requests of one warm re-run: {requests['warm']}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"first_run_s": first.seconds, "seconds": seconds, "requests": requests},
                indent=2,
            )
        )


if __name__ == "__main__":
    os.environ.setdefault("ANSIBLE_NOCOLOR", "1")
    main()
