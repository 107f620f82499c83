"""The lifecycle loop: one background thread, started and stopped with the server, that ticks
every workload owner (Azure ML's job runner today; Batch tasks, VM and container-group
lifecycles later) every ``TICK_S`` seconds with the shared ``ContainerRuntime``.

On start it kills container processes a previous emulator process left behind, then asks each
workload owner to ``recover`` from that process's end (the time of its last heartbeat): only the
processes lived in memory, every other piece of state is in the store.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from localazure.core.context import Context
from localazure.nodes.containers import ContainerRuntime, kill_leftovers

log = logging.getLogger("localazure.nodes")
HEARTBEAT_KIND = "ml-scheduler"
TICK_S = 0.1
HEARTBEAT_EVERY_S = 1.0


class Workloads(Protocol):
    """What owns workloads on nodes (jobs, tasks): the loop moves them through their states."""

    name: str

    def recover(self, stopped_at: float) -> None:
        """Settle what was running when the previous emulator process stopped at ``stopped_at``."""

    def tick(self, now: float) -> None:
        """Move every workload one step (start, watch, finish) and scale the owner's pools."""


class LifecycleLoop:
    def __init__(self, ctx: Context, runtime: ContainerRuntime, owners: list[Workloads]):
        self.ctx = ctx
        self.runtime = runtime
        self.owners = owners
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0

    def start(self) -> None:
        killed = kill_leftovers(self.ctx.settings.state_dir)
        if killed:
            log.warning("killed %d container process(es) left by a previous run", killed)
        beat = self.ctx.store.get(HEARTBEAT_KIND, "heartbeat")
        stopped_at = beat["ts"] if beat else self.ctx.clock()
        for owner in self.owners:
            owner.recover(stopped_at)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="localazure-nodes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.runtime.stop_all()

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            self.tick()

    def tick(self) -> None:
        now = self.ctx.clock()
        for owner in self.owners:
            try:
                owner.tick(now)
            except Exception:  # noqa: BLE001 - one bad tick must not stop the loop
                log.exception("%s tick failed", owner.name)
        if now - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            self.ctx.store.put(HEARTBEAT_KIND, "heartbeat", {"ts": now})
            self._last_heartbeat = now
