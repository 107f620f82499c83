# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A warm, verified pool before the first task (``eval_warm_pool``; the seed's cluster
orchestrator: nodes up, images cached, then jobs).

The tier keeps the run's number of nodes (``scale_to``), then one warm-up job per worker runs the
worker with ``--warm-up`` on each node: the job's container start pulls the image, and the
worker checks the golden image is mounted and complete (``image_ready``) and names its node
(``warm_up``). Per node the report gives how long the node took to start the job (provisioning
and the image pull: the tier's run history gives their sum, from submission to running), the
check (running to ``image_ready``), and the whole; a node whose warm-up fails or does not finish
within the limit is marked unhealthy. The tier's minimum is given back afterwards, so the idle
scale-down returns the nodes once the run is done. A failure no node can get past (the golden
image missing, no KVM) stops the run before its first task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    Failure,
    PermanentFailure,
    classify,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.startup_checks import (
    BootWatch,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    JobState,
    Tier,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    parse_lines,
)

# The seed's targets: the cluster ready in under 5 minutes, a container started in under 2.
READY_TARGET_S = 300.0
START_TARGET_S = 120.0


@runtime_checkable
class WarmsPool(Protocol):
    def scale_to(self, min_nodes: int) -> int: ...

    def submit_warm_up(self, job_key: str) -> str: ...


@dataclass
class NodeWarmUp:
    job_key: str
    node: str | None = None
    start_s: float | None = None  # submission to running: provisioning and the image pull
    check_s: float | None = None  # running to image_ready: the golden image checked
    ready_s: float | None = None  # submission to the warm-up's end
    healthy: bool = False
    error: str | None = None
    _submitted_at: float = 0.0
    _running_at: float | None = None
    _failure: Failure | None = None


@dataclass
class WarmPoolReport:
    scaled_to: int
    nodes: list[NodeWarmUp] = field(default_factory=list)
    ready_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        nodes = [
            {k: v for k, v in asdict(node).items() if not k.startswith("_")} for node in self.nodes
        ]
        return {
            "scaled_to": self.scaled_to,
            "ready_s": round(self.ready_s, 3),
            "healthy": sum(1 for n in self.nodes if n.healthy),
            "unhealthy_nodes": [n["node"] or n["job_key"] for n in nodes if not n["healthy"]],
            "targets_s": {"cluster_ready": READY_TARGET_S, "container_start": START_TARGET_S},
            "nodes": nodes,
        }


def warm_pool(
    tier: Tier,
    workers: int,
    run_id: str,
    *,
    timeout: float,
    poll_interval: float,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> WarmPoolReport:
    """Warm ``workers`` nodes of ``tier`` (a ``WarmsPool``); raises PermanentFailure when no
    node passed and the failure is one the run cannot get past."""
    if not isinstance(tier, WarmsPool):
        raise ValueError(f"tier {tier.name!r} cannot warm a pool")
    started = clock()
    previous = tier.scale_to(workers)
    report = WarmPoolReport(scaled_to=workers)
    try:
        report.nodes = [
            NodeWarmUp(job_key=f"{run_id}-warmup-{index:04d}", _submitted_at=clock())
            for index in range(1, workers + 1)
        ]
        # All at once, so that each warm-up holds a node of its own while the others start.
        with futures.ThreadPoolExecutor(min(workers, 8)) as pool:
            list(pool.map(tier.submit_warm_up, [node.job_key for node in report.nodes]))
        _watch(tier, report.nodes, started + timeout, poll_interval, clock, sleep)
    except BaseException:
        # Interrupted (Ctrl-C) or failing: no warm-up job is left running.
        for node in report.nodes:
            if node.ready_s is None:
                tier.cancel(tier.handle_for(node.job_key) or node.job_key)
        raise
    finally:
        tier.scale_to(previous)
    report.ready_s = clock() - started
    failures = [n._failure for n in report.nodes if n._failure is not None]
    if not any(n.healthy for n in report.nodes):
        permanent = next((f for f in failures if not f.is_transient), None)
        if permanent is not None:
            raise PermanentFailure(permanent)
    return report


def _watch(tier, nodes, deadline, poll_interval, clock, sleep) -> None:
    open_nodes = {node.job_key: node for node in nodes}
    boot = BootWatch()
    while open_nodes:
        for key, node in list(open_nodes.items()):
            handle = tier.handle_for(key) or key
            status = tier.status(handle)
            now = clock()
            if node._running_at is None and status.running_at is not None:
                node._running_at = status.running_at
                node.start_s = round(max(0.0, status.running_at - node._submitted_at), 3)
            for event in parse_lines(tier.read_new_lines(handle)):
                if event.event == "image_ready" and node._running_at is not None:
                    node.check_s = round(max(0.0, event.ts - node._running_at), 3)
                elif event.event == "warm_up":
                    node.node = str(event.get("node"))
                boot.take(key, event, now)
            failure = boot.failure(key, now)
            if failure is not None or status.state.terminal:
                if failure is None and status.state is not JobState.COMPLETED:
                    failure = classify(
                        status.error_code, status.error_message, codes=tier.failure_codes
                    )
                _close(node, now, failure)
                if not status.state.terminal:
                    tier.cancel(handle)
                del open_nodes[key]
        if not open_nodes:
            return
        if clock() >= deadline:
            for key, node in open_nodes.items():
                _close(node, clock(), None, timed_out=True)
                tier.cancel(tier.handle_for(key) or key)
            return
        sleep(poll_interval)


def _close(node: NodeWarmUp, now: float, failure: Failure | None, timed_out: bool = False):
    node.ready_s = round(now - node._submitted_at, 3)
    if timed_out:
        node.error = "did not finish its warm-up in time (eval_warm_pool_timeout)"
    elif failure is not None:
        node._failure = failure
        node.error = failure.describe()
    elif node.node is None:
        node.error = "the warm-up ended without naming its node"
    node.healthy = node.error is None
