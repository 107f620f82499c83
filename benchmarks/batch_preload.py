#!/usr/bin/env python3
"""Three ways a Batch node gets the 15 GB WAA image, side by side, on the emulator.

    .venv/bin/python benchmarks/batch_preload.py [--nodes 4] [--tasks 24] [--time-scale 0.1]
                                                 [--pull-s-per-gb 0.4] [--json out.json]

Starts its own localazure in a temporary state directory, sets up once a registry with the WAA
image imported (about 15.0 GB, the seed's image), the pool identity with AcrPull and a Batch
account, then runs the same tasks through the real engine and ``BatchTier`` on three pools:

- ``hub``: the image pulled from Docker Hub when the first task starts on a node
  (``containerImageNames`` empty, the task's ``containerSettings`` names
  ``docker.io/windowsarena/winarena:latest``);
- ``preload``: the registry image in ``containerConfiguration.containerImageNames``, pulled
  during node start (before the node is idle);
- ``custom``: nodes from a custom VM image that holds the image (recorded for a gallery image
  id through ``/_localazure/batch/preloaded-images``, the stand-in for a VM image captured after
  ``docker pull``, which ``playbooks/vm_image.yml`` makes): no pull at all.

For each it prints the time from the pool's resize (its creation) to the first task event
(the first WAA_EVENT of any task) and the makespan over its bound: ``max(longest task, total
work / nodes)`` plus the node start without a pull (node provisioning), measured from the
resize. Pulls are simulated at ``--pull-s-per-gb`` real seconds per GB (``ml/settings``; the
default 0.4 s makes the 15 GB pull about 6 s, against minutes on Azure).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "collections"), str(ROOT), str(ROOT / "tests" / "integration")]

from azure.mgmt.batch import BatchManagementClient  # noqa: E402
from batch_setup import ACCOUNT, IMAGE, RG, BatchTierWorld  # noqa: E402

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (  # noqa: E402
    EngineConfig,
    EvaluationEngine,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (  # noqa: E402
    Ledger,
)
from localazure.testing import RunningEmulator  # noqa: E402
from localazure.workload.task_model import list_tasks, modelled_duration_s  # noqa: E402

HUB_IMAGE = "docker.io/windowsarena/winarena:latest"
CUSTOM_IMAGE_ID = (
    "/subscriptions/{sub}/resourceGroups/" + RG + "/providers/Microsoft.Compute/galleries/"
    "waa/images/winarena-preloaded/versions/1.0.0"
)


def first_event_at(world: BatchTierWorld, job_id: str) -> float | None:
    """The earliest WAA_EVENT timestamp in any task's stdout of the run's Batch job."""
    client = world.tier(job_id).client
    earliest = None
    for task in client.task.list(job_id):
        text = b"".join(client.file.get_from_task(job_id, task.id, "stdout.txt")).decode()
        for line in text.splitlines():
            if "WAA_EVENT " in line:
                ts = json.loads(line.split("WAA_EVENT ", 1)[1])["ts"]
                earliest = ts if earliest is None else min(earliest, ts)
                break
    return earliest


def make_pool(world: BatchTierWorld, name: str, kind: str, nodes: int, sub: str) -> None:
    vm: dict = {}
    if kind == "hub":
        vm["container_configuration"] = {"type": "DockerCompatible", "container_image_names": []}
    elif kind == "custom":
        vm["image_reference"] = {"id": CUSTOM_IMAGE_ID.format(sub=sub)}
    world.make_pool(name, nodes, **vm)


def run_pool(world, emulator, kind: str, args, tasks, sub: str) -> dict:
    name = f"bench-{kind}"
    started = time.time()
    make_pool(world, name, kind, args.nodes, sub)
    run_id = f"{name}-{uuid.uuid4().hex[:6]}"
    env = {"HEARTBEAT_INTERVAL": "1", "WAA_STANDIN_TIME_SCALE": str(args.time_scale)}
    tier = world.tier(run_id, job_environment=env, pool=name)
    if kind == "hub":
        tier.image = HUB_IMAGE
    ledger = Path(args.state) / f"{run_id}.sqlite3"
    config = EngineConfig(
        workers=args.nodes,
        poll_interval=0.5,
        startup_timeout=600,
        stuck_after=120,
        price_per_node_hour=tier.price_per_node_hour,
        run_id=run_id,
    )
    result = EvaluationEngine(tier, tasks, ledger, config, handle_signals=False).run()
    ended = time.time()
    tier.close()
    with Ledger(ledger) as book:
        done = len(book.results())
    durations = [modelled_duration_s(d, t, args.time_scale) for d, t in tasks]
    provision_s = emulator.admin("GET", "ml/settings").get("node_provision_s", 1.0)
    bound = max(max(durations), sum(durations) / args.nodes) + provision_s
    first = first_event_at(world, tier.job_id)
    world.mgmt.pool.begin_delete(RG, ACCOUNT, name).result()
    return {
        "pool": kind,
        "resize_to_first_event_s": round(first - started, 2) if first else None,
        "makespan_s": round(ended - started, 2),
        "bound_s": round(bound, 2),
        "makespan_over_bound": round((ended - started) / bound, 3),
        "tasks": done,
        "status": result.status,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=24)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--pull-s-per-gb", type=float, default=0.4)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batch-preload-") as state:
        args.state = state
        emulator = RunningEmulator(Path(state) / "localazure").start()
        try:
            emulator.activate()
            emulator.admin("PUT", "ml/settings", {"pull_s_per_gb": args.pull_s_per_gb})
            world = BatchTierWorld(emulator, nodes=0)
            emulator.admin(
                "PUT",
                "batch/preloaded-images",
                {
                    "image_id": CUSTOM_IMAGE_ID.format(sub=emulator.subscription_id),
                    "images": [IMAGE],
                },
            )
            quota = {"families": {"standardDSv5Family": 4 * (args.nodes + 1)}}
            emulator.admin("PUT", f"batch/accounts/{ACCOUNT}/quota", quota)
            assert isinstance(world.mgmt, BatchManagementClient)
            tasks = list_tasks()[: args.tasks]
            sub = f"{emulator.subscription_id}"
            rows = [
                run_pool(world, emulator, kind, args, tasks, sub)
                for kind in ("hub", "preload", "custom")
            ]
        finally:
            emulator.stop()
    print(
        f"{'pool':<9} {'resize->first event':>20} {'makespan':>10} {'bound':>8} {'ratio':>7} tasks"
    )
    for row in rows:
        print(
            f"{row['pool']:<9} {row['resize_to_first_event_s']!s:>19}s {row['makespan_s']:>9}s "
            f"{row['bound_s']:>7}s {row['makespan_over_bound']:>7} {row['tasks']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
