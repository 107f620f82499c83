#!/usr/bin/env python3
"""Cost per full evaluation (154 tasks) in five configurations, against the seed's table.

    .venv/bin/python benchmarks/cost.py [--time-scale 0.2] [--evictions 3] [--json out.json]

Starts its own localazure, sets up the Azure ML resources (registry with the WAA image imported
from Docker Hub, workspace, AcrPull grant, environments on the Docker Hub and the ACR image) and
runs the synthetic 154-task WAA set through the real engine and ``AmlTier`` (a ``TierPool`` of
two clusters for right-sizing) once per configuration:

| configuration | seed | what runs |
| --- | --- | --- |
| baseline | $7.68 | 10 x Standard_D4_v3 held for the whole run (min = max = 10), WAA's static sharding, the image pulled from Docker Hub |
| default | $6.50 | this project's default: Standard_D4s_v5 cluster scaling from zero, dynamic scheduling with queue-ahead, the image from ACR |
| + right-sizing | $4.20 | two clusters: Standard_D2_v3 for the simple and medium tasks, Standard_D4_v3 for the complex ones (rightsizing.py) |
| + spot | $2.80 | the default cluster at low priority, with ``--evictions`` jobs preempted (retried as transient) |
| all combined | $2.50 | right-sizing on low-priority clusters, evictions, the worker count chosen from measured durations (worker_count.py) |

Each configuration runs on the emulator at ``--time-scale`` seconds per simulated WAA minute (the
stand-in's per-domain durations, ``localazure.workload.task_model``), which decides what it
does: the jobs and their tasks, the order, the evictions and retries, the outcomes. Its cost is
then reported **at real durations**: the jobs of its ledger are replayed, in the order they were
submitted, on each cluster's nodes (a queued job goes to the first node free, as a cluster does),
each job taking the real minutes of the tasks it ran (every attempt counts: an evicted job's task
in flight is billed whole) plus half a minute of container start, with the seed's real overheads:
node provisioning 3 min, image pull 10 min from Docker Hub or 1.5 min from ACR on a node's first
job, 2 min idle before scale-down (a held cluster's nodes are billed from the start to the end
of the run; an evicted node is gone and the next job provisions a new one). Prices are the
catalogue's (``localazure/nodes/vm_catalog.py``: low priority at 20% of dedicated). Billing the
emulator's own node time would instead multiply every controller and emulator latency (a second
of wall time is 60 / time_scale seconds of WAA time); that figure is kept in the JSON
(``emulator_billed_usd``). The success rate of each configuration is printed with it: the
stand-in's outcomes are fixed per task, so any loss is a task that did not finish.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "collections"), str(ROOT), str(ROOT / "benchmarks")]

from scheduling import (  # noqa: E402
    COMPUTE,
    ENVIRONMENT,
    NO_VM_BOOT,
    RESOURCE_GROUP,
    WORKSPACE,
    set_up,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (  # noqa: E402
    EngineConfig,
    EvaluationEngine,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.rightsizing import (  # noqa: E402
    TaskClasses,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tier_pool import (  # noqa: E402
    TierPool,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import (  # noqa: E402
    AmlTier,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_count import (  # noqa: E402
    calculate_optimal_workers,
    measured_minutes,
)
from localazure.testing import RunningEmulator  # noqa: E402
from localazure.workload import task_model  # noqa: E402

WORKER_SCRIPT = ROOT / "worker" / "waa_worker.py"
# The seed's figures (seed 000's ACR guide and 004 section 6), in real seconds.
PROVISION_S = 180.0
PULL_S = {"dockerhub": 600.0, "acr": 90.0}
IDLE_S = 120.0
CONTAINER_START_S = 30.0
HUB_ENVIRONMENT = "waa-hub"


@dataclass(frozen=True)
class Cluster:
    name: str
    size: str
    priority: str = "Dedicated"
    workers: int = 10
    held: bool = False  # min = max: nodes held for the whole run (compute instances)
    sizes: tuple[str, ...] = ()


@dataclass
class Config:
    label: str
    seed_usd: float
    clusters: list[Cluster]
    scheduling: str = "dynamic"
    image: str = "acr"
    evictions: int = 0
    choose_workers: bool = False
    result: dict[str, Any] = field(default_factory=dict)


def configurations(evictions: int) -> list[Config]:
    small, large = ("simple", "medium"), ("complex",)
    return [
        Config(
            "baseline (10 x D4_v3, static, Docker Hub)",
            7.68,
            [Cluster("c-base", "Standard_D4_v3", held=True)],
            scheduling="static",
            image="dockerhub",
        ),
        Config("this project's default", 6.50, [Cluster("c-default", "Standard_D4s_v5")]),
        Config(
            "+ right-sizing",
            4.20,
            [
                Cluster("c-rs-d2", "Standard_D2_v3", workers=6, sizes=small),
                Cluster("c-rs-d4", "Standard_D4_v3", workers=4, sizes=large),
            ],
        ),
        Config(
            "+ spot",
            2.80,
            [Cluster("c-spot", "Standard_D4s_v5", priority="LowPriority")],
            evictions=evictions,
        ),
        Config(
            "all combined",
            2.50,
            [
                Cluster("c-all-d2", "Standard_D2_v3", "LowPriority", workers=6, sizes=small),
                Cluster("c-all-d4", "Standard_D4_v3", "LowPriority", workers=4, sizes=large),
            ],
            evictions=evictions,
            choose_workers=True,
        ),
    ]


def create_cluster(emulator: RunningEmulator, cluster: Cluster, scale: float) -> None:
    from azure.ai.ml.entities import AmlCompute

    ml = emulator.ml_client(RESOURCE_GROUP, WORKSPACE)
    ml.compute.begin_create_or_update(
        AmlCompute(
            name=cluster.name,
            size=cluster.size,
            tier="low_priority" if cluster.priority == "LowPriority" else "dedicated",
            min_instances=cluster.workers if cluster.held else 0,
            max_instances=cluster.workers,
            idle_time_before_scale_down=max(1, round(IDLE_S * scale)),
        )
    ).result()


def billed(emulator: RunningEmulator, compute: str) -> tuple[float, float]:
    """(node-seconds, USD) the emulator billed the cluster so far."""
    report = emulator.admin("GET", f"ml/nodes?compute={compute}")
    seconds = sum(n["node_seconds"] for n in report["value"])
    usd = sum(n.get("cost_usd", 0.0) for n in report["value"])
    return seconds, usd


def wait_released(emulator: RunningEmulator, compute: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = emulator.admin("GET", f"ml/nodes?compute={compute}")["value"]
        if all(n["released_at"] is not None for n in nodes):
            return
        time.sleep(0.2)
    raise RuntimeError(f"cluster {compute} still holds nodes after {timeout:.0f}s")


def aml_tier(emulator: RunningEmulator, cluster: Cluster, run: str, env: dict) -> AmlTier:
    import os

    return AmlTier.from_environment(
        {**os.environ, **emulator.env},
        resource_group=RESOURCE_GROUP,
        workspace=WORKSPACE,
        compute=cluster.name,
        environment=f"azureml:{ENVIRONMENT if env['image'] == 'acr' else HUB_ENVIRONMENT}:1",
        experiment_name="bench-cost",
        worker_script=WORKER_SCRIPT.read_text(),
        run_name=run,
        job_environment=env["job"],
        node_sample_interval=0.5,
    )


def run_config(
    emulator: RunningEmulator,
    config: Config,
    tasks: list[tuple[str, str]],
    args: argparse.Namespace,
    workdir: Path,
    measured: dict[str, float],
) -> dict[str, Any]:
    scale = args.time_scale / 60.0  # emulator seconds per real second
    emulator.admin(
        "PUT",
        "ml/settings",
        {
            "time_scale": scale,
            "node_provision_s": PROVISION_S,
            "pull_base_s": PULL_S[config.image],
            "pull_s_per_gb": 0.0,
            "finalize_s": 5.0,
        },
    )
    clusters = list(config.clusters)
    choice = None
    if config.choose_workers and measured:
        choice = calculate_optimal_workers(
            [d for d, _ in tasks], 2.0, sum(c.workers for c in clusters), measured
        )
        clusters = _split_workers(clusters, choice.workers, tasks, measured)
    for cluster in clusters:
        create_cluster(emulator, cluster, scale)
    run_id = config.label.split()[0].strip("+").lower() or "all"
    run_id = f"cost-{run_id}-{int(time.time())}"
    env = {
        "image": config.image,
        "job": {
            **NO_VM_BOOT,
            "WAA_STANDIN_TIME_SCALE": str(args.time_scale),
            "HEARTBEAT_INTERVAL": str(max(0.2, args.time_scale)),
        },
    }
    members = [aml_tier(emulator, c, run_id, env) for c in clusters]
    if len(members) == 1:
        tier = members[0]
        workers = clusters[0].workers
    else:
        tier = TierPool(
            [(c.name, t, c.workers) for c, t in zip(clusters, members, strict=True)],
            mode="spread",
        )
        tier.member_sizes = {c.name: list(c.sizes) for c in clusters}
        tier.use_sizes(TaskClasses({t: d for d, t in tasks}))
        workers = sum(c.workers for c in clusters)
    if config.evictions:
        emulator.admin(
            "POST",
            "ml/faults",
            {
                "fault": "preempt",
                "job": f"^{run_id}-",
                "after_s": 3 * args.time_scale,
                "times": config.evictions,
            },
        )
    before = {c.name: billed(emulator, c.name) for c in clusters}
    engine = EvaluationEngine(
        tier,
        tasks,
        workdir / f"{run_id}.sqlite3",
        EngineConfig(
            workers=workers,
            scheduling=config.scheduling,
            poll_interval=0.1,
            startup_timeout=max(30.0, 3600 * scale),
            stuck_after=max(30.0, 3600 * scale),
            price_per_node_hour=tier.price_per_node_hour,
            run_id=run_id,
            requeue_backoff_initial=0.2,
            requeue_backoff_max=1.0,
            requeue_backoff_jitter=0.0,
            breaker_threshold=max(3, config.evictions + 2),
        ),
        handle_signals=False,
    )
    try:
        result = engine.run()
    finally:
        tier.close()
    after = {}
    for cluster in clusters:
        if cluster.held:  # compute instances: stopped when the run ends
            after[cluster.name] = billed(emulator, cluster.name)
            _delete(emulator, cluster.name)
        else:  # a cluster scaling to zero: billed until its nodes are released
            wait_released(emulator, cluster.name)
            after[cluster.name] = billed(emulator, cluster.name)
    to_real = 60.0 / args.time_scale
    per_cluster = {}
    for cluster in clusters:
        seconds, usd = after[cluster.name]
        per_cluster[cluster.name] = {
            "size": cluster.size,
            "priority": cluster.priority,
            "workers": cluster.workers,
            "node_hours": (seconds - before[cluster.name][0]) * to_real / 3600,
            "usd": (usd - before[cluster.name][1]) * to_real,
        }
    preempted = sum(1 for r in result.retries if r.code == "NodePreempted")
    replayed = replay(workdir / f"{run_id}.sqlite3", clusters, config.image, tasks)
    for name, figures in replayed["clusters"].items():
        per_cluster[name].update(
            emulator_billed_usd=per_cluster[name].pop("usd"),
            emulator_node_hours=per_cluster[name].pop("node_hours"),
            **figures,
        )
    return {
        "label": config.label,
        "seed_usd": config.seed_usd,
        "usd": sum(c["usd"] for c in per_cluster.values()),
        "node_hours": sum(c["node_hours"] for c in per_cluster.values()),
        "emulator_billed_usd": sum(c["emulator_billed_usd"] for c in per_cluster.values()),
        "makespan_h": replayed["makespan_s"] / 3600,
        "emulator_makespan_h": result.makespan_s * to_real / 3600,
        "success_rate": result.success_rate,
        "tasks": len(result.tasks),
        "evictions": preempted,
        "clusters": per_cluster,
        "worker_choice": choice.to_dict() if choice else None,
        "ledger": str(workdir / f"{run_id}.sqlite3"),
    }


def replay(
    ledger_path: Path, clusters: list[Cluster], image: str, tasks: list[tuple[str, str]]
) -> dict[str, Any]:
    """The run's jobs replayed at real durations on each cluster's nodes (see the docstring)."""
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
    from localazure.nodes import vm_catalog

    domains = {task: domain for domain, task in tasks}
    with Ledger(ledger_path) as ledger:
        jobs = sorted(
            (j for j in ledger.jobs() if j.handle), key=lambda j: (j.submitted_at, j.job_key)
        )
        ran: dict[str, list[str]] = {}
        for attempt in ledger.attempts():
            ran.setdefault(attempt.job_key, []).append(attempt.task_id)
    by_name = {c.name: c for c in clusters}
    figures: dict[str, dict[str, float]] = {}
    makespan = 0.0
    for cluster in clusters:
        own = [
            j
            for j in jobs
            if len(clusters) == 1 or (j.handle or "").split("/", 1)[0] == cluster.name
        ]
        price = vm_catalog.find(cluster.size).price_for(cluster.priority)
        nodes: list[dict[str, Any]] = []
        released: list[tuple[float, float]] = []
        replaced_at: list[float] = []  # when an evicted node went away
        for job in own:
            minutes = sum(
                task_model.modelled_minutes(domains.get(t, ""), t) for t in ran.get(job.job_key, [])
            )
            live = [n for n in nodes if not n["gone"]]
            if len(live) < by_name[cluster.name].workers:
                started = replaced_at.pop(0) if replaced_at else 0.0
                node = {
                    "started_at": started,
                    "free_at": started + PROVISION_S,
                    "pulled": False,
                    "gone": False,
                }
                nodes.append(node)
                live.append(node)
            node = min(live, key=lambda n: n["free_at"])
            start = node["free_at"] + (0.0 if node["pulled"] else PULL_S[image])
            node["pulled"] = True
            node["free_at"] = start + CONTAINER_START_S + minutes * 60.0
            if job.failure_code == "NodePreempted":  # the node is gone; a new one replaces it
                node["gone"] = True
                released.append((node["started_at"], node["free_at"]))
                replaced_at.append(node["free_at"])
        end = max((n["free_at"] for n in nodes), default=0.0)
        makespan = max(makespan, end)
        for node in nodes:
            if node.get("gone"):
                continue
            until = end if cluster.held else node["free_at"] + IDLE_S
            released.append((node["started_at"], until))
        seconds = sum(b - a for a, b in released)
        figures[cluster.name] = {"node_hours": seconds / 3600, "usd": seconds / 3600 * price}
    return {"clusters": figures, "makespan_s": makespan}


def _split_workers(clusters, total, tasks, measured):
    """The chosen worker count split over the sized clusters by each one's share of the work."""
    from dataclasses import replace

    from ansible_collections.openadapt.azure_eval.plugins.module_utils.rightsizing import class_of
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_count import (
        PRIOR_MINUTES,
    )

    work = {c.name: 0.0 for c in clusters}
    for domain, _ in tasks:
        size_class = class_of(domain)
        owner = next((c for c in clusters if size_class in c.sizes), clusters[0])
        work[owner.name] += measured.get(domain, PRIOR_MINUTES[size_class])
    whole = sum(work.values()) or 1.0
    split = {name: max(1, round(total * w / whole)) for name, w in work.items()}
    return [replace(c, workers=split[c.name]) for c in clusters]


def _delete(emulator: RunningEmulator, compute: str) -> None:
    ml = emulator.ml_client(RESOURCE_GROUP, WORKSPACE)
    ml.compute.begin_delete(compute).result()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'configuration':<44} {'seed':>7} {'measured':>9} {'node-h':>7} {'makespan':>9} "
        f"{'success':>8} {'evict':>5}",
    ]
    for r in rows:
        lines.append(
            f"{r['label']:<44} ${r['seed_usd']:>6.2f} ${r['usd']:>8.2f} {r['node_hours']:>7.2f} "
            f"{r['makespan_h']:>8.2f}h {r['success_rate']:>8.1%} {r['evictions']:>5}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-scale", type=float, default=0.2, help="s per simulated minute")
    parser.add_argument("--evictions", type=int, default=3, help="jobs preempted on spot")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.time_scale <= 0 or args.evictions < 0:
        parser.error("--time-scale must be > 0 and --evictions >= 0")
    logging.getLogger("azure").setLevel(logging.ERROR)
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        workdir = Path(tmp)
        tasks = task_model.list_tasks()
        emulator = RunningEmulator(workdir / "state").start()
        try:
            emulator.activate()
            set_up(emulator, 10)
            emulator.admin("PUT", "ml/quota", {"family_default": 400, "low_priority": 400})
            ml = emulator.ml_client(RESOURCE_GROUP, WORKSPACE)
            _delete(emulator, COMPUTE)  # the scheduling benchmark's cluster is not used here
            from azure.ai.ml.entities import Environment

            ml.environments.create_or_update(
                Environment(
                    name=HUB_ENVIRONMENT,
                    version="1",
                    image="docker.io/windowsarena/winarena:latest",
                )
            )
            measured: dict[str, float] = {}
            for config in configurations(args.evictions):
                row = run_config(emulator, config, tasks, args, workdir, measured)
                rows.append(row)
                if not measured:
                    # Real minutes per domain, measured by the first run, for the worker count.
                    measured = {
                        d: m * 60.0 / args.time_scale
                        for d, m in measured_minutes([row["ledger"]]).items()
                    }
                print(
                    f"{row['label']}: ${row['usd']:.2f}, success {row['success_rate']:.1%}",
                    flush=True,
                )
        finally:
            emulator.stop()
    print(
        f"\n154 tasks at WAA's per-domain durations (time scale {args.time_scale} s per "
        f"simulated minute); costs at real durations, catalogue prices "
        f"(benchmark took {time.monotonic() - began:.0f} s)"
    )
    print(table(rows))
    combined, baseline = rows[-1], rows[0]
    same_success = len({round(r["success_rate"], 6) for r in rows}) == 1
    print(
        f"combined ${combined['usd']:.2f} against the seed's $2.50: "
        f"{'MET' if combined['usd'] <= 2.50 else 'MISSED'}; success rate "
        f"{'unchanged' if same_success else 'CHANGED'} across configurations "
        f"({baseline['success_rate']:.1%}); all tasks finished in every run: "
        f"{all(r['tasks'] == len(task_model.list_tasks()) for r in rows)}"
    )
    for row in rows:
        for name, c in row["clusters"].items():
            print(
                f"  {row['label']:<44} {name:<10} {c['size']:<16} {c['priority']:<11} "
                f"{c['workers']:>2} workers {c['node_hours']:>6.2f} node-h ${c['usd']:.2f}"
            )
        if row["worker_choice"]:
            print(f"  worker count: {row['worker_choice']['arithmetic']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
