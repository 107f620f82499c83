#!/usr/bin/env python3
"""Static sharding against the default (dynamic) scheduler on the emulator, against a bound.

    .venv/bin/python benchmarks/scheduling.py [--workers 10] [--time-scale S] [--seed N]
                                              [--poll-interval 0.5] [--tasks N] [--before]
                                              [--chunk-factor F] [--job-per-chunk]
                                              [--json out.json]

Starts its own localazure in a temporary state directory, sets up the Azure ML resources once
(resource group, registry with the WAA image imported, workspace, AcrPull grant, cluster,
environment), then runs the seeded 154-task synthetic WAA set (or ``--tasks N`` of it, repeated with new ids)
through the real engine and ``AmlTier`` against the same cluster: WAA's static contiguous
sharding, with ``--before`` the default scheduler as it was before queue-ahead (same code, the
old settings), then the default scheduler (with a task feed container: one job per worker that
takes its next tasks from the feed; ``--job-per-chunk`` also runs it without the feed, a new job
per chunk, as before the feed). Each run has its own run id and ledger and starts on a cold cluster (the benchmark
waits for the previous run's nodes to scale down first).

For each run it prints the makespan over its lower bound, ``max(longest task, total work /
workers) + one startup``, where task durations come from the stand-in's own model
(``task_model.modelled_duration_s`` at the jobs' time scale and seed) and one startup is measured:
first job submission to that job's first WAA_EVENT. It also prints the requests the run made,
per task, classified from the emulator's request log, the controller's CPU time per task, and
the node-seconds and cost the emulator billed. A miss of the target (1.05 up to 10 workers,
1.10 beyond) is reported, not an error: the exit code is 0.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "collections"), str(ROOT), str(ROOT / "tests" / "integration")]

from aml_setup import task_feed_container  # noqa: E402

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml  # noqa: E402
from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import (  # noqa: E402
    EngineConfig,
    EvaluationEngine,
    RunResult,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import (  # noqa: E402
    JobRow,
    Ledger,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.run_watch_setup import (  # noqa: E402
    run_watch_for,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.scheduler import (  # noqa: E402
    make_scheduler,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.task_order import (  # noqa: E402
    expected_durations,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import (  # noqa: E402
    STD_LOG,
    AmlTier,
    job_name,
)
from localazure.testing import RunningEmulator  # noqa: E402
from localazure.workload import task_model  # noqa: E402

# The default scheduler's target over the bound: 1.05 up to 10 workers, 1.10 beyond.
TARGET_RATIO_SMALL = 1.05
TARGET_RATIO_LARGE = 1.10
DEFAULT_TIME_SCALE = 0.3  # s of stand-in sleep per simulated WAA minute: ~40-65 s per run
EVENT_PREFIX = "WAA_EVENT "

RESOURCE_GROUP = "rg-bench"
REGISTRY = "benchacr"
WORKSPACE = "ws-bench"
COMPUTE = "cpu-bench"
VM_SIZE = "Standard_D4s_v5"
IDLE_BEFORE_SCALE_DOWN_S = 10
ENVIRONMENT = "waa-bench"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


@dataclass
class JobTrace:
    """One job as the ledger and its own std_log saw it."""

    job_key: str
    tasks: int
    submitted_at: float
    ended_at: float | None  # when the engine noticed the job was over
    first_event_at: float | None = None  # the worker's clock (same machine)
    finished_at: float | None = None
    task_durations: dict[str, float] = field(default_factory=dict)  # as the worker measured
    # (event, worker's ts, task id) of every event but heartbeats
    events: list[tuple[str, float, str | None]] = field(default_factory=list)

    def client_first_tasks(self) -> set[str]:
        """The tasks each WAA client process began with (its start counts in their time)."""
        firsts, fresh = set(), True
        for name, _ts, task_id in self.events:
            if name in ("started", "tasks_added"):
                fresh = True
            elif name == "task_started" and fresh and task_id:
                firsts.add(task_id)
                fresh = False
        return firsts

    def phases(self) -> dict[str, float] | None:
        """Where this worker's time went, first event to finished: boot (to its first task),
        tasks (task_started to task_result), feed waits (awaiting to the entry or the end),
        entry reads (a last result to the next entry taken, when it was there) and the end (the
        last result, or the last wait, to finished)."""
        starts = [ts for name, ts, _ in self.events if name == "task_started"]
        if self.first_event_at is None or self.finished_at is None or not starts:
            return None
        feed_wait = entry_reads = 0.0
        awaiting = last_result = None
        for name, ts, _ in self.events:
            if name == "task_result":
                last_result = ts
            elif name == "awaiting":
                awaiting = ts
            elif name in ("tasks_added", "finished"):
                if awaiting is not None:
                    feed_wait += ts - awaiting
                elif name == "tasks_added" and last_result is not None:
                    entry_reads += ts - last_result
                if name == "finished":
                    end = ts - (awaiting if awaiting is not None else last_result or ts)
                awaiting = None
        return {
            "boot_s": starts[0] - self.first_event_at,
            "tasks_s": sum(self.task_durations.values()),
            "feed_wait_s": feed_wait,
            "entry_reads_s": entry_reads,
            "end_s": end,
        }


@dataclass
class RunReport:
    strategy: str
    label: str
    result: RunResult
    bound: dict[str, float]
    durations: dict[str, float]  # modelled, by task id
    requests: dict[str, int]
    paths: dict[str, int]
    jobs: list[JobTrace]
    node_seconds: float
    cost_usd: float
    nodes: int
    controller_cpu_s: float = 0.0  # this process's CPU time during engine.run()
    node_jobs: list[list[str]] = field(default_factory=list)  # job handles, per node, in order
    # The engine's Azure Monitor reads during the run (count) and their budget per minute.
    metric_reads: int = 0
    metric_budget_per_min: float = 0.0

    @property
    def tasks(self) -> int:
        return self.result.total_tasks

    @property
    def ratio(self) -> float:
        return self.result.makespan_s / self.bound["bound_s"]

    def per_task(self, category: str) -> float:
        return self.requests.get(category, 0) / self.tasks

    def diagnostics(self) -> dict[str, Any]:
        """Where the time between the bound and the makespan went."""
        startups = [
            j.first_event_at - j.submitted_at for j in self.jobs if j.first_event_at is not None
        ]
        notice = [
            j.ended_at - j.finished_at
            for j in self.jobs
            if j.ended_at is not None and j.finished_at is not None
        ]
        overheads = [
            measured - self.durations[task_id]
            for j in self.jobs
            for task_id, measured in j.task_durations.items()
        ]
        first_overheads = [
            j.task_durations[task_id] - self.durations[task_id]
            for j in self.jobs
            for task_id in j.client_first_tasks()
            if task_id in j.task_durations
        ]
        slowest = max(self.jobs, key=lambda j: j.ended_at or 0.0, default=None)
        by_handle = {job_name(j.job_key): j for j in self.jobs}
        # On one node: the previous job's worker said "finished", then the next one's first event.
        node_gaps = [
            after.first_event_at - before.finished_at
            for handles in self.node_jobs
            for before, after in itertools.pairwise(by_handle.get(h) for h in handles)
            if before and after and before.finished_at and after.first_event_at
        ]
        last_finish = max((j.finished_at or 0.0 for j in self.jobs), default=0.0)
        phases = [p for p in (j.phases() for j in self.jobs) if p is not None]
        return {
            "worker_phases_s": {name: _stats([p[name] for p in phases]) for name in phases[0]}
            if phases
            else {},
            "node_gap_s": _stats(node_gaps),
            "node_gap_total_s": round(sum(node_gaps), 2),
            "last_finish_to_end_s": round(self.result.finished_at - last_finish, 3),
            "job_startup_s": _stats(startups),
            "finish_to_noticed_s": _stats(notice),
            "task_overhead_s": _stats(overheads),
            "task_overhead_total_s": round(sum(overheads), 2),
            # The first task of each client process (the client's start is in its time).
            "client_first_task_overhead_s": _stats(first_overheads),
            "client_first_task_overhead_total_s": round(sum(first_overheads), 2),
            "last_job": slowest.job_key if slowest else None,
            "last_job_tasks": slowest.tasks if slowest else None,
            "last_job_submitted_after_s": round(slowest.submitted_at - self.result.started_at, 2)
            if slowest
            else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "run_id": self.result.run_id,
            "status": self.result.status,
            "tasks": self.tasks,
            "succeeded": self.result.succeeded,
            "failed": self.result.failed,
            "errored": self.result.errored,
            "retries": len(self.result.retries),
            "jobs": self.result.jobs_submitted,
            "makespan_s": round(self.result.makespan_s, 3),
            "bound": {k: round(v, 3) for k, v in self.bound.items()},
            "ratio": round(self.ratio, 4),
            "requests": self.requests,
            "requests_per_task": {k: round(self.per_task(k), 3) for k in self.requests},
            "requests_by_path": self.paths,
            "emulator_node_seconds": round(self.node_seconds, 2),
            "emulator_cost_usd": round(self.cost_usd, 6),
            "nodes": self.nodes,
            "controller_cpu_s": round(self.controller_cpu_s, 3),
            "engine_cost": self.result.cost.to_dict(),
            "diagnostics": self.diagnostics(),
            "job_traces": [
                {
                    "job_key": j.job_key,
                    "tasks": j.tasks,
                    "submitted_s": _rel(j.submitted_at, self.result.started_at),
                    "first_event_s": _rel(j.first_event_at, self.result.started_at),
                    "finished_s": _rel(j.finished_at, self.result.started_at),
                    "noticed_s": _rel(j.ended_at, self.result.started_at),
                    "events": [
                        [name, _rel(ts, self.result.started_at), task_id]
                        for name, ts, task_id in j.events
                    ],
                }
                for j in self.jobs
            ],
        }


def _rel(at: float | None, origin: float) -> float | None:
    return None if at is None else round(at - origin, 3)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "mean": round(statistics.fmean(values), 3),
        "max": round(max(values), 3),
    }


# -- setup ------------------------------------------------------------------------------------


def set_up(emulator: RunningEmulator, workers: int) -> str:
    """The resources /tmp/smoke/run.py and the aml playbook create: once for every run.
    Returns the task feed container's URL."""
    from azure.ai.ml.entities import AmlCompute, Environment
    from azure.mgmt.authorization import AuthorizationManagementClient
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.resource import ResourceManagementClient

    sub = emulator.subscription_id
    resources = emulator.mgmt_client(ResourceManagementClient)
    resources.resource_groups.create_or_update(RESOURCE_GROUP, {"location": "eastus"})
    acr = emulator.mgmt_client(ContainerRegistryManagementClient)
    acr.registries.begin_create(
        RESOURCE_GROUP, REGISTRY, {"location": "eastus", "sku": {"name": "Basic"}}
    ).result()
    acr.registries.begin_import_image(
        RESOURCE_GROUP,
        REGISTRY,
        {
            "source": {
                "registryUri": "docker.io",
                "sourceImage": "windowsarena/winarena:latest",
            },
            "targetTags": ["winarena:latest"],
        },
    ).result()
    rg_id = f"/subscriptions/{sub}/resourceGroups/{RESOURCE_GROUP}"
    workspace = resources.resources.begin_create_or_update_by_id(
        f"{rg_id}/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}",
        "2024-10-01",
        {"location": "eastus", "identity": {"type": "SystemAssigned"}},
    ).result()
    auth = emulator.mgmt_client(AuthorizationManagementClient)
    auth.role_assignments.create(
        f"{rg_id}/providers/Microsoft.ContainerRegistry/registries/{REGISTRY}",
        str(uuid.uuid4()),
        {
            "role_definition_id": f"/subscriptions/{sub}/providers/"
            f"Microsoft.Authorization/roleDefinitions/{ACR_PULL}",
            "principal_id": workspace.identity.principal_id,
            "principal_type": "ServicePrincipal",
        },
    )
    # The emulator's default regional quota (100 vCPUs) holds 25 D4s_v5 nodes; the benchmark
    # needs room for every worker, as a real subscription would after a quota request.
    emulator.admin("PUT", "ml/quota", {"family_default": max(100, 4 * workers)})
    ml = emulator.ml_client(RESOURCE_GROUP, WORKSPACE)
    ml.compute.begin_create_or_update(
        AmlCompute(
            name=COMPUTE,
            size=VM_SIZE,
            min_instances=0,
            max_instances=workers,
            idle_time_before_scale_down=IDLE_BEFORE_SCALE_DOWN_S,
        )
    ).result()
    ml.environments.create_or_update(
        Environment(name=ENVIRONMENT, version="1", image=f"{REGISTRY}.azurecr.io/winarena:latest")
    )
    # The cluster has no identity of its own: its jobs read with the workspace's.
    return task_feed_container(emulator, RESOURCE_GROUP, workspace.identity.principal_id)


# The benchmarks measure the engine's scheduling, not WAA's VM boot: their clusters mount no
# golden image, so their workers skip the boot (as test_aml_evaluation's do).
NO_VM_BOOT = {"WAA_VM_BOOT": "0"}


def classify(row: dict[str, Any], emulator_host: str) -> str | None:
    """arm, run_history, log_reads, token or other; None for the emulator's admin API."""
    path = row["path"]
    if path.startswith("/_localazure"):
        return None
    if path.startswith("/history/"):
        return "run_history"
    if path.startswith("/mlstorage/"):
        return "log_reads"
    if path.startswith("/subscriptions/") and row["host"].lower() == emulator_host:
        return "arm"
    lowered = path.lower()
    if "/oauth2/" in lowered or "openid-configuration" in lowered or "/msi/token" in lowered:
        return "token"
    return "other"


def path_shape(row: dict[str, Any], run_id: str) -> str:
    """The request with its run-specific names folded, for the per-path breakdown."""
    parts = []
    for part in row["path"].split("/"):
        if run_id.lower() in part.lower():
            part = "{job}"
        elif len(part) > 40 or (len(part) == 36 and part.count("-") == 4):
            part = "{id}"
        parts.append(part)
    return f"{row['method']} {'/'.join(parts)}"


def count_requests(
    rows: list[dict[str, Any]], emulator_host: str, run_id: str
) -> tuple[dict[str, int], dict[str, int]]:
    categories: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    for row in rows:
        category = classify(row, emulator_host)
        if category is None:
            continue
        categories[category] += 1
        paths[f"{category}: {path_shape(row, run_id)}"] += 1
    counts = {k: categories.get(k, 0) for k in ("arm", "run_history", "log_reads", "token")}
    counts["other"] = categories.get("other", 0)
    counts["total"] = sum(categories.values())
    return counts, dict(paths.most_common())


# -- one run ----------------------------------------------------------------------------------


def wait_for_cold_cluster(emulator: RunningEmulator, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        computes = emulator.admin("GET", f"ml/nodes?compute={COMPUTE}")["computes"]
        if not computes or computes[0]["active_nodes"] == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"cluster {COMPUTE} did not scale down to zero within {timeout:.0f}s")


def job_traces(ledger_path: Path, tier: AmlTier) -> list[JobTrace]:
    """Each job's submission (ledger) and the worker's own events (std_log, read after the run
    through the run-history log URL, as the engine reads it)."""
    with Ledger(ledger_path) as ledger:
        rows: list[JobRow] = ledger.jobs()
    traces = []
    for row in rows:
        trace = JobTrace(row.job_key, len(row.task_ids), row.submitted_at, row.ended_at)
        if row.handle:
            details = azure_ml.run_details(tier.ml_client, row.handle)
            url = (details.log_files or {}).get(STD_LOG)
            text = tier._http.get(url, timeout=30).text if url else ""
            for line in text.splitlines():
                if not line.startswith(EVENT_PREFIX):
                    continue
                event = json.loads(line[len(EVENT_PREFIX) :])
                if trace.first_event_at is None:
                    trace.first_event_at = float(event["ts"])
                if event.get("event") != "heartbeat":
                    trace.events.append(
                        (str(event.get("event")), float(event["ts"]), event.get("task_id"))
                    )
                if event.get("event") == "finished":
                    trace.finished_at = float(event["ts"])
                elif event.get("event") == "task_result" and "duration_s" in event:
                    trace.task_durations[event["task_id"]] = float(event["duration_s"])
        traces.append(trace)
    return traces


def ideal_makespan(
    strategy: str,
    durations: dict[str, float],
    domains: dict[str, str],
    config: EngineConfig,
    feeds: bool,
) -> float:
    """The strategy's own schedule with every overhead at zero: list scheduling of its chunks
    (in the order the scheduler hands them out) onto the first worker to become free. Its ratio
    to the bound's work term is what the strategy loses by itself, before any overhead."""
    ids = list(durations)
    expected = expected_durations(ids, domains)
    scheduler = make_scheduler(
        strategy,
        ids if strategy == "static" else sorted(ids, key=expected.__getitem__, reverse=True),
        config.workers,
        factor=config.chunk_factor_for(feeds),
        max_chunk=config.max_chunk,
        expected=expected,
        head=config.head_for(feeds),
    )
    free = [0.0] * config.workers
    while scheduler.remaining:
        chunk = scheduler.next_chunk()
        at = heapq.heappop(free)
        heapq.heappush(free, at + sum(durations[t] for t in chunk))
    return max(free)


def lower_bound(
    durations: dict[str, float], workers: int, jobs: list[JobTrace]
) -> dict[str, float]:
    first = min(jobs, key=lambda j: j.submitted_at)
    if first.first_event_at is None:
        raise RuntimeError(f"job {first.job_key} printed no WAA_EVENT; cannot measure startup")
    startup = first.first_event_at - first.submitted_at
    longest = max(durations.values())
    per_worker = sum(durations.values()) / workers
    return {
        "longest_task_s": longest,
        "work_per_worker_s": per_worker,
        "startup_s": startup,
        "bound_s": max(longest, per_worker) + startup,
    }


class _LogDisplay:
    """Alerts of a benchmark run go to the log (run_watch_for prints through a display)."""

    def warning(self, text: str) -> None:
        logging.getLogger("benchmark").warning(text)

    def display(self, text: str) -> None:
        logging.getLogger("benchmark").info(text)


def run_strategy(
    emulator: RunningEmulator,
    variant: Variant,
    tasks: list[tuple[str, str]],
    test_all: Path,
    durations: dict[str, float],
    args: argparse.Namespace,
    workdir: Path,
    task_feed: str,
) -> RunReport:
    strategy, label = variant.strategy, variant.label
    wait_for_cold_cluster(emulator)
    run_id = f"bench-{strategy}-{uuid.uuid4().hex[:6]}"
    tier = AmlTier.from_environment(
        dict(os.environ),
        resource_group=RESOURCE_GROUP,
        workspace=WORKSPACE,
        compute=COMPUTE,
        environment=f"azureml:{ENVIRONMENT}:1",
        experiment_name="scheduling-benchmark",
        worker_script=(ROOT / "worker" / "waa_worker.py").read_text(),
        run_name=run_id,
        job_environment={
            **NO_VM_BOOT,
            "WAA_STANDIN_TIME_SCALE": repr(args.time_scale),
            "WAA_STANDIN_SEED": str(args.seed),
            "WAA_TEST_ALL_META": str(test_all),
            "WAA_CLIENT_BATCH": "1" if variant.batch_client else "0",
        },
        **{"task_feed": task_feed, **variant.tier},
    )
    # The product's node metrics at its default cadence (one Azure Monitor read a minute).
    watch = run_watch_for(
        {
            "run_name": run_id,
            "stuck_after": 600.0,
            "startup_timeout": 120.0,
            "metrics_interval": args.metrics_interval,
        },
        tier,
        tasks,
        _LogDisplay(),
    )
    config = EngineConfig(
        workers=args.workers,
        poll_interval=args.poll_interval,
        startup_timeout=120.0,
        stuck_after=600.0,
        scheduling=strategy,
        price_per_node_hour=tier.price_per_node_hour,
        run_id=run_id,
        watch=watch,
        **variant.engine,
    )
    ledger_path = workdir / f"{run_id}.sqlite3"
    seq = emulator.request_seq()  # the window: engine.run() only, the tier's setup is before it
    print(f"running {label} ({run_id}) ...", file=sys.stderr, flush=True)
    cpu_before = time.process_time()
    result = EvaluationEngine(tier, tasks, ledger_path, config).run()
    cpu_s = time.process_time() - cpu_before
    time.sleep(0.5)  # let the server finish logging the last responses
    rows = [r for r in emulator.requests(seq) if r["ts"] <= result.finished_at + 0.5]
    host = (urlsplit(emulator.endpoint).hostname or "").lower()  # logged without the port
    requests, paths = count_requests(rows, host, run_id)
    jobs = job_traces(ledger_path, tier)
    bound = lower_bound(durations, args.workers, jobs)
    domains = {task_id: domain for domain, task_id in tasks}
    bound["ideal_s"] = (
        ideal_makespan(strategy, durations, domains, config, tier.feeds_tasks) + bound["startup_s"]
    )
    # Billed node time includes the idle tail until scale-down: wait for it, then read it.
    wait_for_cold_cluster(emulator)
    nodes = [
        n
        for n in emulator.admin("GET", f"ml/nodes?compute={COMPUTE}")["value"]
        if n["acquired_at"] >= result.started_at - 1.0
    ]
    print(
        f"  {label}: {result.makespan_s:.1f} s, {result.jobs_submitted} jobs, "
        f"{result.succeeded + result.failed}/{result.total_tasks} tasks scored, "
        f"{result.errored} errored, {len(result.retries)} retries",
        file=sys.stderr,
        flush=True,
    )
    return RunReport(
        strategy=strategy,
        label=label,
        result=result,
        bound=bound,
        durations=durations,
        requests=requests,
        paths=paths,
        jobs=jobs,
        node_jobs=[list(n["jobs"]) for n in nodes],
        node_seconds=sum(n["node_seconds"] for n in nodes),
        cost_usd=sum(n["cost_usd"] for n in nodes),
        nodes=len(nodes),
        controller_cpu_s=cpu_s,
        metric_reads=watch.metrics.requests if watch.metrics else 0,
        metric_budget_per_min=watch.metrics.requests_per_minute if watch.metrics else 0.0,
    )


# -- output -----------------------------------------------------------------------------------


def table(reports: list[RunReport]) -> str:
    header = (
        f"{'strategy':<18} {'makespan s':>10} {'bound s':>8} {'ratio':>6} {'ideal':>6} {'jobs':>5} "
        f"{'ARM/t':>6} {'RH/t':>6} {'logs/t':>6} {'tok/t':>6} {'oth/t':>6} {'all/t':>6} "
        f"{'cpu ms/t':>8} {'node-s':>7} {'cost $':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in reports:
        lines.append(
            f"{r.label:<18} {r.result.makespan_s:>10.1f} {r.bound['bound_s']:>8.1f} "
            f"{r.ratio:>6.3f} {r.bound['ideal_s'] / r.bound['bound_s']:>6.3f} "
            f"{r.result.jobs_submitted:>5d} {r.per_task('arm'):>6.2f} "
            f"{r.per_task('run_history'):>6.2f} {r.per_task('log_reads'):>6.2f} "
            f"{r.per_task('token'):>6.2f} {r.per_task('other'):>6.2f} "
            f"{r.per_task('total'):>6.2f} "
            f"{1000 * r.controller_cpu_s / r.tasks:>8.1f} "
            f"{r.node_seconds:>7.0f} {r.cost_usd:>8.4f}"
        )
    return "\n".join(lines)


def bound_lines(reports: list[RunReport], workers: int) -> list[str]:
    b = reports[0].bound
    startups = ", ".join(f"{r.label} {r.bound['startup_s']:.2f} s" for r in reports)
    return [
        f"bound = max(longest task {b['longest_task_s']:.1f} s, work/{workers} "
        f"{b['work_per_worker_s']:.1f} s) + one startup, measured per run as first submission "
        f"to its first WAA_EVENT: {startups}",
        "ideal = the strategy's own chunks list-scheduled with every overhead at zero, over "
        "the bound; X/t = requests per task in the run's window (RH run history, logs std_log "
        "reads, tok token, oth other); cpu ms/t = the controller's CPU time (this process, "
        "engine and tier) per task; node-s, cost $ = the emulator's billed node time "
        "including the idle tail until scale-down",
    ]


def diagnostic_lines(report: RunReport) -> list[str]:
    d = report.diagnostics()

    def med(name: str) -> str:
        s = d[name]
        return f"{s['median']:.2f} (max {s['max']:.2f})" if s else "n/a"

    return [
        f"{report.label}: job startup s median {med('job_startup_s')}; finish-to-noticed s "
        f"median {med('finish_to_noticed_s')}; per-task overhead s median "
        f"{med('task_overhead_s')}, total {d['task_overhead_total_s']:.1f} s over "
        f"{report.tasks} tasks (of which the first task of each WAA client "
        f"{d['client_first_task_overhead_total_s']:.1f} s over "
        f"{(d['client_first_task_overhead_s'] or {}).get('n', 0)}); node gap (a job's finish "
        "to the next one's first event on "
        f"that node) s median {med('node_gap_s')}, total {d['node_gap_total_s']:.1f} s; last "
        f"finish to run end {d['last_finish_to_end_s']:.2f} s",
        f"{report.label}: each worker's time, first event to finished, s median (max): "
        + "; ".join(
            f"{name.removesuffix('_s').replace('_', ' ')} {s['median']:.2f} ({s['max']:.2f})"
            for name, s in d["worker_phases_s"].items()
            if s
        ),
    ]


@dataclass(frozen=True)
class Variant:
    """One run of the benchmark: a strategy and the engine and tier settings it runs with."""

    strategy: str
    label: str
    engine: dict[str, Any] = field(default_factory=dict)
    tier: dict[str, Any] = field(default_factory=dict)
    batch_client: bool = True


# The engine and tier as they were before issue 6 section 6: no job queued ahead, one submit at
# a time, run history read on every poll, one WAA client process per task, shrinking chunks
# from the start (chunk factor 2, no balanced head).
BEFORE = Variant(
    "dynamic",
    "dynamic (before)",
    engine={"queue_ahead": 0, "submit_concurrency": 1, "chunk_factor": 2.0, "balanced_head": 0.0},
    tier={"history_interval": 0.0, "quiet_after": 0.0, "task_feed": ""},
    batch_client=False,
)


# The default scheduler without the task feed: a new job per chunk, one queued ahead per worker.
JOB_PER_CHUNK = Variant("dynamic", "dynamic (job per chunk)", tier={"task_feed": ""})


def variants(
    chunk_factor: float | None,
    before: bool,
    static: bool = True,
    also: list[dict[str, float | int]] | None = None,
    job_per_chunk: bool = False,
) -> list[Variant]:
    label = "dynamic (default)" if chunk_factor is None else f"dynamic (f={chunk_factor:g})"
    dynamic = Variant("dynamic", label, engine={"chunk_factor": chunk_factor})
    first = [Variant("static", "static (WAA)", tier={"task_feed": ""})] if static else []
    first += [JOB_PER_CHUNK] if job_per_chunk else []
    extra = [
        Variant("dynamic", "dynamic (" + ",".join(f"{k}={v:g}" for k, v in s.items()) + ")", s)
        for s in also or []
    ]
    return [*first, *([BEFORE] if before else []), dynamic, *extra]


def engine_settings(text: str) -> dict[str, float | int]:
    """``--also`` KEY=VALUE[,KEY=VALUE]: EngineConfig fields of a variant run after the default."""
    names = set(EngineConfig.__dataclass_fields__)
    settings = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        if key not in names or not value:
            raise argparse.ArgumentTypeError(f"{pair!r}: use an EngineConfig field=number")
        number = float(value)
        settings[key] = (
            int(number) if EngineConfig.__dataclass_fields__[key].type == "int" else number
        )
    return settings


def target_ratio(workers: int) -> float:
    return TARGET_RATIO_SMALL if workers <= 10 else TARGET_RATIO_LARGE


def synthetic_tasks(count: int | None, workdir: Path) -> tuple[list[tuple[str, str]], Path]:
    """The 154-task set, or ``count`` tasks: the set repeated with new ids (same domains and
    duration models), written as a test_all.json the jobs' workers read."""
    base = task_model.list_tasks()
    if count is None or count == len(base):
        return base, task_model.SYNTHETIC_TEST_ALL
    tasks = []
    for i in range(count):
        domain, task_id = base[i % len(base)]
        copy = i // len(base)
        tasks.append(
            (
                domain,
                task_id if copy == 0 else task_model.synthetic_task_id(domain, 10000 * copy + i),
            )
        )
    meta: dict[str, list[str]] = {}
    for domain, task_id in tasks:
        meta.setdefault(domain, []).append(task_id)
    path = workdir / "test_all.json"
    path.write_text(json.dumps(meta), encoding="utf-8")
    return tasks, path


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help="seconds of stand-in sleep per simulated WAA minute (WAA_STANDIN_TIME_SCALE)",
    )
    parser.add_argument("--seed", type=int, default=task_model.DEFAULT_SEED)
    parser.add_argument("--poll-interval", type=float, default=0.5)
    parser.add_argument(
        "--metrics-interval",
        type=float,
        default=60.0,
        help="seconds between the engine's Azure Monitor reads (eval_metrics_interval)",
    )
    parser.add_argument(
        "--chunk-factor",
        type=float,
        default=None,
        help="the dynamic scheduler's chunk factor (default: EngineConfig's, by worker count)",
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="run this many tasks: the 154-task set cut short or repeated with new ids",
    )
    parser.add_argument(
        "--before",
        action="store_true",
        help="also run the default scheduler as it was before issue 6 section 6 (no queue-ahead, "
        "sequential submits, run history every poll, one client process per task)",
    )
    parser.add_argument(
        "--no-static", action="store_true", help="skip the static run (to compare settings)"
    )
    parser.add_argument(
        "--job-per-chunk",
        action="store_true",
        help="also run the default scheduler without the task feed (a new job per chunk)",
    )
    parser.add_argument(
        "--also",
        type=engine_settings,
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="also run the default scheduler with these EngineConfig settings (repeatable), "
        "e.g. --also balanced_head=0.6 --also chunk_factor=1.5",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the full report here")
    args = parser.parse_args(argv)
    if min(args.workers, args.time_scale, args.poll_interval, args.chunk_factor or 1) <= 0:
        parser.error("--workers, --time-scale, --poll-interval and --chunk-factor must be > 0")
    if args.tasks is not None and args.tasks < 1:
        parser.error("--tasks must be at least 1")
    logging.getLogger("azure").setLevel(logging.ERROR)
    # azure-ai-ml sets its own loggers' levels; its "experimental class" notes are noise here.
    logging.getLogger("azure.ai.ml._utils._experimental").setLevel(logging.ERROR)
    # The emulator runs in its own session: a SIGTERM must unwind to the ``finally`` that stops
    # it (the engine swaps in its own handler while it runs, which also unwinds).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-scheduling-") as tmp:
        workdir = Path(tmp)
        tasks, test_all = synthetic_tasks(args.tasks, workdir)
        durations = {
            task_id: task_model.modelled_duration_s(domain, task_id, args.time_scale, args.seed)
            for domain, task_id in tasks
        }
        emulator = RunningEmulator(workdir / "state").start()
        try:
            emulator.activate()
            task_feed = set_up(emulator, args.workers)
            settings = emulator.admin("GET", "ml/settings")
            reports = [
                run_strategy(
                    emulator, variant, tasks, test_all, durations, args, workdir, task_feed
                )
                for variant in variants(
                    args.chunk_factor,
                    args.before,
                    not args.no_static,
                    args.also,
                    args.job_per_chunk,
                )
            ]
        finally:
            emulator.stop()
    elapsed = time.monotonic() - began

    dynamic = reports[len(reports) - len(args.also) - 1]  # the default, before any --also
    factor = args.chunk_factor or EngineConfig().chunk_factor_for(feeds=True)
    target = target_ratio(args.workers)
    print(
        f"{len(tasks)} tasks, {args.workers} workers, time scale {args.time_scale} s/min, "
        f"seed {args.seed}, poll interval {args.poll_interval} s, chunk factor "
        f"{factor:g}, {VM_SIZE} cluster "
        f"(idle {IDLE_BEFORE_SCALE_DOWN_S} s before scale-down); emulator ML timing {settings}"
    )
    print(table(reports))
    for line in bound_lines(reports, args.workers):
        print(line)
    for r in reports:
        for line in diagnostic_lines(r):
            print(line)
    for r in reports:
        # One read at the start, then at most one per interval.
        budget = int(r.result.makespan_s // args.metrics_interval) + 1
        print(
            f"metric reads ({r.label}): {r.metric_reads} Azure Monitor request(s) in "
            f"{r.result.makespan_s:.0f} s, budget {budget} (one at the start, then one per "
            f"{args.metrics_interval:g} s: {r.metric_budget_per_min:.2f} per minute)"
        )
    met = dynamic.ratio <= target
    print(
        f"target: {dynamic.label} within {target:.2f} of the bound: "
        f"{'MET' if met else 'MISSED'} ({dynamic.ratio:.3f}); benchmark took {elapsed:.0f} s"
    )
    before = next((r for r in reports if r.label == BEFORE.label), None)
    if before is not None:
        ratio = dynamic.per_task("total") / before.per_task("total")
        print(
            f"requests per task: {dynamic.per_task('total'):.2f} against "
            f"{before.per_task('total'):.2f} before ({ratio:.2f}x; target at most 0.50x)"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "workers": args.workers,
                    "time_scale": args.time_scale,
                    "seed": args.seed,
                    "poll_interval": args.poll_interval,
                    "chunk_factor": factor,
                    "tasks": len(tasks),
                    "emulator_ml_settings": settings,
                    "target_ratio": target,
                    "target_met": met,
                    "elapsed_s": round(elapsed, 1),
                    "runs": [r.to_dict() for r in reports],
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
