#!/usr/bin/env python3
"""tier=auto on the emulator: what falling back costs, and what spreading gains.

    .venv/bin/python benchmarks/tiers.py [--workers 10] [--quota 4] [--time-scale 0.3]
                                         [--json out.json]

Starts its own localazure, sets up the Azure ML resources (benchmarks/scheduling.py's
``set_up``) and runs the 154-task synthetic WAA set through the real engine:

1. **clean**: Azure ML alone, ``--workers`` workers;
2. **fallback**: a pool [aml, batch] in fallback mode; once half the tasks have a result every
   Azure ML container crashes (a workload fault through the admin API), the Azure ML breaker
   opens and the rest moves to the next tier. Printed: makespan over the clean run's (the seed's
   bound: under 1.10), every task once, which tier ran how many;
3. **quota**: Azure ML alone at ``--quota`` workers (its core quota), against
4. **spread**: the same AML quota plus two more tiers of ``--quota`` workers each, spread mode.

The next tier is an Azure Batch pool of ``--workers`` nodes, ready before the run (``--next
local``: worker processes of this controller). The spread tiers are the local tier: they start a
worker without node provisioning or an image pull, which flatters the spread against Azure ML.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [
    str(ROOT / "collections"),
    str(ROOT),
    str(ROOT / "benchmarks"),
    str(ROOT / "tests" / "integration"),  # batch_setup: the Batch account and pool
]

from scheduling import (  # noqa: E402
    COMPUTE,
    ENVIRONMENT,
    NO_VM_BOOT,
    RESOURCE_GROUP,
    WORKSPACE,
    set_up,
    wait_for_cold_cluster,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (  # noqa: E402
    EngineConfig,
    EvaluationEngine,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (  # noqa: E402
    Ledger,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier_pool import (  # noqa: E402
    TierPool,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import (  # noqa: E402
    AmlTier,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.local import (  # noqa: E402
    LocalTier,
)
from localazure.testing import RunningEmulator  # noqa: E402
from localazure.workload import task_model  # noqa: E402

WORKER_SCRIPT = ROOT / "worker" / "waa_worker.py"


def job_env(args) -> dict[str, str]:
    return {
        **NO_VM_BOOT,
        "WAA_STANDIN_TIME_SCALE": str(args.time_scale),
        "HEARTBEAT_INTERVAL": "1",
        "WAA_CLIENT_BATCH": "1",
    }


QUOTA_COMPUTE = "cpu-quota"


def quota_cluster(emulator, nodes: int) -> None:
    """A cluster of at most ``nodes`` nodes: Azure ML's core quota for the run (with jobs queued
    ahead, the cluster's node limit, not the engine's workers, bounds what runs at once)."""
    from azure.ai.ml.entities import AmlCompute

    emulator.ml_client(RESOURCE_GROUP, WORKSPACE).compute.begin_create_or_update(
        AmlCompute(
            name=QUOTA_COMPUTE,
            size="Standard_D4s_v5",
            min_instances=0,
            max_instances=nodes,
            idle_time_before_scale_down=10,
        )
    ).result()


def aml(emulator, run_id, args, compute: str = COMPUTE) -> AmlTier:
    return AmlTier.from_environment(
        {**os.environ, **emulator.env},
        resource_group=RESOURCE_GROUP,
        workspace=WORKSPACE,
        compute=compute,
        environment=f"azureml:{ENVIRONMENT}:1",
        experiment_name="bench-tiers",
        worker_script=WORKER_SCRIPT.read_text(),
        run_name=run_id,
        job_environment=job_env(args),
    )


def local(workdir: Path, name: str, args) -> LocalTier:
    return LocalTier(workdir / name, extra_env=job_env(args), heartbeat_interval=1.0)


def results(ledger: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def run(tier, tasks, ledger: Path, workers: int, run_id: str, args) -> dict[str, Any]:
    # The engine's waits at the workload's time scale (their defaults are real seconds): a 5 s
    # hold after a failure is nothing in a two-hour run, but 17 simulated minutes at 0.3 s/min.
    scale = args.time_scale / 60.0
    engine = EvaluationEngine(
        tier,
        tasks,
        ledger,
        EngineConfig(
            workers=workers,
            poll_interval=0.5,
            startup_timeout=120,
            stuck_after=600,
            requeue_backoff_initial=5.0 * scale,
            requeue_backoff_max=300.0 * scale,
            requeue_backoff_jitter=5.0 * scale,
            price_per_node_hour=tier.price_per_node_hour,
            run_id=run_id,
        ),
        handle_signals=False,
    )
    try:
        result = engine.run()
    finally:
        tier.close()
    with Ledger(ledger) as book:
        handles = {job.job_key: job.handle or "" for job in book.jobs()}
        rows = book.results()
        duplicates = book.duplicates_ignored
    by_tier: dict[str, int] = {}
    for row in rows.values():
        handle = handles.get(row.job_key or "", "")
        name = handle.split("/", 1)[0] if "/" in handle else tier.name
        by_tier[name] = by_tier.get(name, 0) + 1
    return {
        "makespan_s": result.makespan_s,
        "tasks": len(result.tasks),
        "duplicates": duplicates,
        "success_rate": result.success_rate,
        "by_tier": by_tier,
        "moves": tier.describe().get("moves", []),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--quota", type=int, default=4, help="AML workers within its quota")
    parser.add_argument("--time-scale", type=float, default=0.3)
    parser.add_argument(
        "--next",
        choices=["local", "batch"],
        default="batch",
        help="the tier the fallback run moves to (batch: a pool of --workers nodes, ready)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.getLogger("azure").setLevel(logging.ERROR)
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tasks = task_model.list_tasks()
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tiers-") as tmp:
        workdir = Path(tmp)
        emulator = RunningEmulator(workdir / "state").start()
        try:
            emulator.activate()
            set_up(emulator, args.workers)
            quota_cluster(emulator, args.quota)
            stamp = int(time.time())

            report["clean"] = run(
                aml(emulator, f"clean-{stamp}", args),
                tasks,
                workdir / "clean.sqlite3",
                args.workers,
                f"clean-{stamp}",
                args,
            )
            print(f"clean: {report['clean']['makespan_s']:.1f}s", flush=True)
            wait_for_cold_cluster(emulator)

            run_id = f"fallback-{stamp}"
            ledger = workdir / "fallback.sqlite3"

            def fail_halfway() -> None:
                while results(ledger) < len(tasks) // 2:
                    time.sleep(0.1)
                emulator.admin(
                    "POST",
                    "ml/faults",
                    {"fault": "crash", "job": f"^{run_id}-", "after_s": 0.0, "times": 10000},
                )

            threading.Thread(target=fail_halfway, daemon=True).start()
            if args.next == "batch":
                from batch_setup import BatchTierWorld

                batch = BatchTierWorld(emulator, nodes=args.workers)
                batch.wait_steady()
                following = batch.tier(run_id, job_environment=job_env(args))
            else:
                following = local(workdir, "fb", args)
            pool = TierPool(
                [("aml", aml(emulator, run_id, args), None), (args.next, following, None)]
            )
            report["fallback"] = run(pool, tasks, ledger, args.workers, run_id, args)
            print(f"fallback: {report['fallback']['makespan_s']:.1f}s", flush=True)
            emulator.admin("DELETE", "ml/faults")
            wait_for_cold_cluster(emulator)

            report["quota"] = run(
                aml(emulator, f"quota-{stamp}", args, QUOTA_COMPUTE),
                tasks,
                workdir / "quota.sqlite3",
                args.quota,
                f"quota-{stamp}",
                args,
            )
            print(f"aml at quota: {report['quota']['makespan_s']:.1f}s", flush=True)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and any(
                c["active_nodes"]
                for c in emulator.admin("GET", f"ml/nodes?compute={QUOTA_COMPUTE}")["computes"]
            ):
                time.sleep(0.5)

            run_id = f"spread-{stamp}"
            spread = TierPool(
                [
                    ("aml", aml(emulator, run_id, args, QUOTA_COMPUTE), args.quota),
                    ("local-1", local(workdir, "s1", args), args.quota),
                    ("local-2", local(workdir, "s2", args), args.quota),
                ],
                mode="spread",
            )
            report["spread"] = run(
                spread, tasks, workdir / "spread.sqlite3", args.quota, run_id, args
            )
            print(f"spread: {report['spread']['makespan_s']:.1f}s", flush=True)
        finally:
            emulator.stop()

    clean, fallback = report["clean"], report["fallback"]
    ratio = fallback["makespan_s"] / clean["makespan_s"]
    print(
        f"\n154 tasks, {args.workers} workers, time scale {args.time_scale} s per simulated minute"
    )
    print(
        f"fallback: makespan {fallback['makespan_s']:.1f}s against {clean['makespan_s']:.1f}s clean: "
        f"{ratio:.3f} (seed's bound < 1.10: {'MET' if ratio < 1.10 else 'MISSED'}); "
        f"tasks {fallback['tasks']}, duplicates {fallback['duplicates']}, by tier "
        f"{fallback['by_tier']}; moves {[(m['tier'], m['to']) for m in fallback['moves']]}"
    )
    quota, spread = report["quota"], report["spread"]
    print(
        f"AML alone at its quota ({args.quota} workers): {quota['makespan_s']:.1f}s; spread over "
        f"three tiers ({args.quota} each): {spread['makespan_s']:.1f}s "
        f"({quota['makespan_s'] / spread['makespan_s']:.2f}x faster); by tier {spread['by_tier']}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
