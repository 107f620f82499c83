"""What a simulated node's CPU, memory and disk do, sampled once a second while the emulator
runs (kept in memory, as platform metrics are kept by Azure, for ``RETAIN_S``).

A node's CPU and memory rise while it holds a workload and fall back when it is idle; its disk
fills a little with every second of work and never empties while the node lives. An
``overload`` workload fault (``POST /_localazure/ml/faults`` with ``{"fault": "overload",
"metric": "cpu"}``) drives one figure of the faulted workload's node to 99% for as long as that
workload is on the node.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any

from localazure.core.context import Context
from localazure.nodes import pool as node_pool

SAMPLE_S = 1.0
RETAIN_S = 3600.0
DISK_MB = 131072.0
OVERLOAD_PCT = 99.0


@dataclass(frozen=True)
class Sample:
    at: float
    node_id: str
    compute_id: str
    compute: str
    run_id: str | None
    cpu: float
    memory: float
    disk_used_mb: float
    # What the node counts of a Batch account read: its state as Batch spells it
    # (``idle``, ``running``, ``starttaskfailed``...), priority and cores.
    state: str = ""
    low_priority: bool = False
    vcpus: int = 0

    @property
    def disk_available_mb(self) -> float:
        return DISK_MB - self.disk_used_mb


class NodeFigures:
    """The samples of every node, and the state the model keeps per node (busy since when,
    disk used so far)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: deque[Sample] = deque()
        self._busy_since: dict[str, tuple[str, float]] = {}
        self._disk: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()
            self._busy_since.clear()
            self._disk.clear()
            self._last.clear()

    def sample(self, ctx: Context, now: float) -> None:
        taken = []
        for node in node_pool.active(ctx):
            taken.append(self._figures(node, now))
        with self._lock:
            self._samples.extend(taken)
            while self._samples and self._samples[0].at < now - RETAIN_S:
                self._samples.popleft()

    def _figures(self, node: dict[str, Any], now: float) -> Sample:
        node_id, run = node["id"], node.get("run_id")
        busy = run is not None and node["state"] == "running"
        if busy:
            since = self._busy_since.get(node_id)
            if since is None or since[0] != run:
                self._busy_since[node_id] = (run, now)
            busy_for = now - self._busy_since[node_id][1]
        else:
            self._busy_since.pop(node_id, None)
            busy_for = 0.0
        step = now - self._last.get(node_id, now)
        self._last[node_id] = now
        jitter = (zlib.crc32(f"{node_id}{int(now)}".encode()) % 600) / 100.0 - 3.0
        disk = self._disk.get(node_id, 0.18 * DISK_MB)
        if busy:
            cpu = 35.0 + 40.0 * (1 - math.exp(-busy_for / 20.0)) + jitter
            memory = 30.0 + 35.0 * (1 - math.exp(-busy_for / 30.0)) + jitter / 2
            disk = min(0.8 * DISK_MB, disk + 40.0 * step)
        else:
            cpu, memory = 3.0 + jitter / 3, 24.0 + jitter / 3
        overload = node.get("overload")
        if busy and overload and overload.get("run") == run and now >= overload["from"]:
            if overload["metric"] == "cpu":
                cpu = OVERLOAD_PCT
            elif overload["metric"] == "memory":
                memory = OVERLOAD_PCT
            else:
                disk = OVERLOAD_PCT / 100 * DISK_MB
        self._disk[node_id] = disk
        return Sample(
            now,
            node_id,
            node["compute_id"],
            node["compute"],
            run if busy else None,
            round(max(0.0, min(100.0, cpu)), 2),
            round(max(0.0, min(100.0, memory)), 2),
            round(disk, 1),
            (node.get("batch") or {}).get("state", node["state"]).lower(),
            node.get("priority") == "LowPriority",
            int(node.get("vcpus") or 0),
        )

    def samples(self, start: float, end: float) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples if start <= s.at < end]


class Sampler:
    """The background thread that samples every node each ``SAMPLE_S`` seconds and then lets
    the alert rules look (``after_sample``)."""

    def __init__(self, ctx: Context, figures: NodeFigures, after_sample: Any = None) -> None:
        self.ctx = ctx
        self.figures = figures
        self._after = after_sample
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="localazure-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        import logging

        log = logging.getLogger("localazure.monitor")
        while not self._stop.wait(SAMPLE_S):
            try:
                now = self.ctx.clock()
                self.figures.sample(self.ctx, now)
                if self._after is not None:
                    self._after(now)
            except Exception:  # noqa: BLE001 - one bad sample must not stop the thread
                log.exception("monitor sample failed")
