"""Which tasks go into the next job.

``StaticSharding`` is WAA's own scheme: N workers, N contiguous shards fixed up front, so the
slowest shard decides the makespan. ``DynamicChunking`` hands out shrinking chunks as jobs finish
(guided self-scheduling), so stragglers at the end are spread over idle workers; the engine's
default on a tier with a task feed. ``BalancedStart``, its default on a tier without one, first
gives every worker one job holding an equal share of the long tasks' expected work, then hands
out the short rest as ``DynamicChunking`` does: each job restart costs a container start (a
Windows VM boot on WAA), so fewer jobs, balanced up front, end sooner.
Tasks returned from a failed or cancelled job go to the front of the queue in every strategy.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping, Sequence
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


class BalancedStart(DynamicChunking):
    """``task_ids`` longest expected first: the longest tasks, holding ``head`` of the expected
    work, are split into one job per worker by the LPT rule (each task to the job with the
    least expected work so far), so that the first round ends at about the same time on every
    node; the rest, the short tasks, go out in shrinking chunks to whichever node frees first,
    which evens out what the estimates got wrong."""

    def __init__(
        self,
        task_ids: Sequence[str],
        expected: Mapping[str, float],
        workers: int,
        head: float = 0.8,
        factor: float = 1.0,
        max_chunk: int | None = None,
    ) -> None:
        if not 0.0 <= head <= 1.0:
            raise ValueError("head must be between 0 and 1")
        total = sum(expected.get(t, 0.0) for t in task_ids)
        split, work = 0, 0.0
        while split < len(task_ids) and work + expected.get(task_ids[split], 0.0) <= head * total:
            work += expected.get(task_ids[split], 0.0)
            split += 1
        super().__init__(task_ids[split:], workers, factor=factor, max_chunk=max_chunk)
        self._head: deque[list[str]] = deque(
            _lpt_bins(task_ids[:split], expected, workers, max_chunk)
        )

    def next_chunk(self) -> list[str]:
        if self._head:
            return self._head.popleft()
        return super().next_chunk()

    def requeue(self, task_ids: Sequence[str]) -> None:
        if self._head and task_ids:
            self._head.appendleft(list(task_ids))  # before the balanced jobs still to go
        else:
            super().requeue(task_ids)

    @property
    def remaining(self) -> int:
        return super().remaining + sum(len(chunk) for chunk in self._head)


def _lpt_bins(
    task_ids: Sequence[str], expected: Mapping[str, float], bins: int, max_chunk: int | None
) -> list[list[str]]:
    """``task_ids`` (longest first) in ``bins`` jobs of about equal expected work, the heaviest
    job first; a job longer than ``max_chunk`` tasks is cut into pieces of that size."""
    heap = [(0.0, index, []) for index in range(bins)]
    for task_id in task_ids:
        work, index, chunk = heapq.heappop(heap)
        chunk.append(task_id)
        heapq.heappush(heap, (work + expected.get(task_id, 0.0), index, chunk))
    chunks = [chunk for _work, _index, chunk in sorted(heap, key=lambda b: -b[0]) if chunk]
    if max_chunk is None:
        return chunks
    return [c[i : i + max_chunk] for c in chunks for i in range(0, len(c), max_chunk)]


def make_scheduler(
    strategy: str,
    task_ids: Sequence[str],
    workers: int,
    factor: float = 2.0,
    max_chunk: int | None = None,
    *,
    expected: Mapping[str, float] | None = None,
    head: float = 0.0,
) -> Scheduler:
    """``expected`` durations and a ``head`` above 0 make the dynamic strategy a
    ``BalancedStart``."""
    if strategy == "dynamic" and head > 0 and expected is not None:
        return BalancedStart(
            task_ids, expected, workers, head=head, factor=factor, max_chunk=max_chunk
        )
    if strategy == "dynamic":
        return DynamicChunking(task_ids, workers, factor=factor, max_chunk=max_chunk)
    if strategy == "static":
        return StaticSharding(task_ids, workers)
    raise ValueError(f"unknown scheduling strategy {strategy!r}; use 'dynamic' or 'static'")
