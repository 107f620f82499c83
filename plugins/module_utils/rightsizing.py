# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Right-sizing: tasks go to compute of the size their complexity needs.

A task profile puts each task in a size class, ``simple`` < ``medium`` < ``complex``. The
default is the evaluation guide's (seed 004, section 6.2): notepad and settings simple,
file_explorer and chrome medium, libreoffice and coding complex; WAA's other domains are placed
alike (clock, windows_calc, microsoft_paint simple; msedge, vlc medium; vs_code is WAA's coding
domain). The profile can be given (``{class: [domain patterns]}``) or measured from the
ledgers of earlier runs (:func:`profile_from_ledgers`: each domain's median duration against
the median of all).

The members of a pool of tiers say which classes they take (``sizes``: a D2 cluster the
simple and medium tasks, a D4 cluster the complex ones). :class:`SizedScheduler` keeps one
queue per class and hands a chunk only for a class that has a free worker on a member taking
it, so each member is fed only its tasks; a larger member with nothing of its own to do takes
smaller tasks. A task that turns out too big for its size (out of memory, the nested VM fails
to boot) is moved up a class (:meth:`TaskClasses.promote`) and retried on the larger size.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

CLASSES = ("simple", "medium", "complex")
DEFAULT_PROFILE: dict[str, list[str]] = {
    "simple": ["notepad*", "settings*", "clock*", "windows_calc*", "microsoft_paint*"],
    "medium": ["file_explorer*", "chrome*", "msedge*", "vlc*"],
    "complex": ["libreoffice*", "coding*", "vs_code*"],
}
# Failures that say the size was too small for the task.
TOO_SMALL_CODES = frozenset({"NestedVirtualizationUnavailable", "OutOfMemory", "OOMKilled"})
_TOO_SMALL_WORDS = ("out of memory", "oom", "cannot allocate memory", "failed to boot")


def check_profile(profile: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    unknown = sorted(set(profile) - set(CLASSES))
    if unknown:
        raise ValueError(f"task profile classes must be among {list(CLASSES)}, not {unknown}")
    return {c: [str(p) for p in profile.get(c, [])] for c in CLASSES}


def class_of(domain: str | None, profile: Mapping[str, Sequence[str]] | None = None) -> str:
    """The size class of a domain; a domain no pattern names is ``medium``."""
    if profile is None:
        profile = DEFAULT_PROFILE
    for size_class in reversed(CLASSES):  # the larger class wins when two patterns match
        if any(fnmatch.fnmatch(domain or "", pattern) for pattern in profile.get(size_class, [])):
            return size_class
    return "medium"


def profile_from_durations(durations: Mapping[str, Iterable[float]]) -> dict[str, list[str]]:
    """Domains whose median duration is at least 1.5 x the median of all domains' medians are
    complex, at most 0.75 x simple, the rest medium."""
    medians = {d: statistics.median(v) for d, v in durations.items() if list(v)}
    if not medians:
        return check_profile(DEFAULT_PROFILE)
    middle = statistics.median(medians.values())
    profile: dict[str, list[str]] = {c: [] for c in CLASSES}
    for domain, value in sorted(medians.items()):
        if value >= 1.5 * middle:
            profile["complex"].append(domain)
        elif value <= 0.75 * middle:
            profile["simple"].append(domain)
        else:
            profile["medium"].append(domain)
    return profile


def profile_from_ledgers(paths: Iterable[str | Path]) -> dict[str, list[str]]:
    """The profile measured from earlier runs' ledgers (their successful and failed results)."""
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger

    durations: dict[str, list[float]] = {}
    for path in paths:
        if not Path(path).exists():
            continue
        with Ledger(path) as ledger:
            for row in ledger.results().values():
                if row.domain and row.duration_s and row.status in ("success", "fail"):
                    durations.setdefault(row.domain, []).append(row.duration_s)
    return profile_from_durations(durations)


def too_small(code: str | None, message: str | None) -> bool:
    text = (message or "").lower()
    return code in TOO_SMALL_CODES or any(word in text for word in _TOO_SMALL_WORDS)


class TaskClasses:
    """The size class of every task of a run; shared by the scheduler and the pool."""

    def __init__(
        self,
        domains: Mapping[str, str | None],
        profile: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.profile = check_profile(DEFAULT_PROFILE if profile is None else profile)
        self._classes = {task: class_of(domain, self.profile) for task, domain in domains.items()}
        self.promoted: dict[str, str] = {}  # task -> the class it was moved up to
        self.listeners: list[Callable[[str, str, str], None]] = []

    def of(self, task_id: str) -> str:
        return self._classes.get(task_id, "medium")

    def of_chunk(self, task_ids: Sequence[str]) -> str:
        """A chunk needs the size of its largest task."""
        return max((self.of(t) for t in task_ids), key=CLASSES.index, default="medium")

    def promote(self, task_ids: Iterable[str], offered: Sequence[str]) -> list[str]:
        """Move the tasks one class up (to the next class some member takes)."""
        moved = []
        for task in task_ids:
            current = CLASSES.index(self.of(task))
            larger = [c for c in CLASSES[current + 1 :] if c in offered]
            if larger:
                old = self._classes.get(task, "medium")
                self._classes[task] = self.promoted[task] = larger[0]
                moved.append(task)
                for listener in self.listeners:
                    listener(task, old, larger[0])
        return moved


class SizeRouter(Protocol):
    """Where chunks of a size class can run (a pool of tiers of different sizes)."""

    def free_for(self, size_class: str) -> bool: ...

    def reserve(self, size_class: str, chunk: Sequence[str]) -> None: ...

    def release(self, chunk: Sequence[str]) -> None: ...


class SizedScheduler:
    """One queue per size class, chunks by guided self-scheduling over all of them; a chunk is
    handed out only for a class with a free worker on a member that takes it (``router``
    reserves that worker for the chunk)."""

    def __init__(
        self,
        task_ids: Sequence[str],
        workers: int,
        classes: TaskClasses,
        router: SizeRouter,
        factor: float = 2.0,
        max_chunk: int | None = None,
    ) -> None:
        if workers < 1 or factor <= 0:
            raise ValueError("need workers >= 1 and factor > 0")
        self.workers = workers
        self.classes = classes
        self.factor = factor
        self.max_chunk = max_chunk
        self._router = router
        self._queues: dict[str, deque[str]] = {
            c: deque(t for t in task_ids if classes.of(t) == c) for c in CLASSES
        }
        classes.listeners.append(self._moved)

    def next_chunk(self) -> list[str]:
        # The larger classes first: their tasks are the longest and only their members take them.
        for size_class in reversed(CLASSES):
            queue = self._queues[size_class]
            if queue and self._router.free_for(size_class):
                size = max(1, math.ceil(self.remaining / (self.factor * self.workers)))
                if self.max_chunk is not None:
                    size = min(size, self.max_chunk)
                chunk = [queue.popleft() for _unused in range(min(size, len(queue)))]
                self._router.reserve(size_class, chunk)
                return chunk
        return []

    def requeue(self, task_ids: Sequence[str]) -> None:
        self._router.release(task_ids)
        for task in reversed(list(task_ids)):
            self._queues[self.classes.of(task)].appendleft(task)

    def _moved(self, task: str, old: str, new: str) -> None:
        if task in self._queues[old]:
            self._queues[old].remove(task)
            self._queues[new].appendleft(task)

    @property
    def remaining(self) -> int:
        return sum(len(q) for q in self._queues.values())
