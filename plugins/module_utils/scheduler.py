"""Which tasks go into the next job.

``StaticSharding`` is WAA's own scheme: N workers, N contiguous shards fixed up front, so the
slowest shard decides the makespan. ``DynamicChunking`` (the default) hands out shrinking chunks as
jobs finish (guided self-scheduling), so stragglers at the end are spread over idle workers.
Tasks returned from a failed or cancelled job go to the front of the queue in both strategies.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Protocol


class Scheduler(Protocol):
    workers: int

    def next_chunk(self) -> list[str]:
        """The task ids for the next job; empty when there is nothing to hand out."""

    def requeue(self, task_ids: Sequence[str]) -> None: ...

    @property
    def remaining(self) -> int: ...


def contiguous_shards(task_ids: Sequence[str], workers: int) -> list[list[str]]:
    """Split into ``workers`` contiguous slices whose sizes differ by at most one.

    The first ``len % workers`` shards get the extra task; empty shards are dropped.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    base, extra = divmod(len(task_ids), workers)
    shards, start = [], 0
    for index in range(workers):
        size = base + (1 if index < extra else 0)
        if size:
            shards.append(list(task_ids[start : start + size]))
        start += size
    return shards


class StaticSharding:
    def __init__(self, task_ids: Sequence[str], workers: int) -> None:
        self.workers = workers
        self._shards: deque[list[str]] = deque(contiguous_shards(task_ids, workers))
        self._returned: deque[list[str]] = deque()

    def next_chunk(self) -> list[str]:
        if self._returned:
            return self._returned.popleft()
        if self._shards:
            return self._shards.popleft()
        return []

    def requeue(self, task_ids: Sequence[str]) -> None:
        # A failed shard is re-run as one unit, as WAA would re-run that worker.
        if task_ids:
            self._returned.appendleft(list(task_ids))

    @property
    def remaining(self) -> int:
        return sum(len(s) for s in self._shards) + sum(len(s) for s in self._returned)


class DynamicChunking:
    def __init__(
        self,
        task_ids: Sequence[str],
        workers: int,
        factor: float = 2.0,
        min_chunk: int = 1,
        max_chunk: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if factor <= 0:
            raise ValueError("factor must be positive")
        if min_chunk < 1 or (max_chunk is not None and max_chunk < min_chunk):
            raise ValueError("need 1 <= min_chunk <= max_chunk")
        self.workers = workers
        self.factor = factor
        self.min_chunk = min_chunk
        self.max_chunk = max_chunk
        self._queue: deque[str] = deque(task_ids)

    def chunk_size(self) -> int:
        size = max(self.min_chunk, math.ceil(len(self._queue) / (self.factor * self.workers)))
        if self.max_chunk is not None:
            size = min(size, self.max_chunk)
        return min(size, len(self._queue))

    def next_chunk(self) -> list[str]:
        return [self._queue.popleft() for _slot in range(self.chunk_size())]

    def requeue(self, task_ids: Sequence[str]) -> None:
        self._queue.extendleft(reversed(list(task_ids)))

    @property
    def remaining(self) -> int:
        return len(self._queue)


def make_scheduler(
    strategy: str,
    task_ids: Sequence[str],
    workers: int,
    factor: float = 2.0,
    max_chunk: int | None = None,
) -> Scheduler:
    if strategy == "dynamic":
        return DynamicChunking(task_ids, workers, factor=factor, max_chunk=max_chunk)
    if strategy == "static":
        return StaticSharding(task_ids, workers)
    raise ValueError(f"unknown scheduling strategy {strategy!r}; use 'dynamic' or 'static'")
