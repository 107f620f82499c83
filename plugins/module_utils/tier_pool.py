# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Several tiers behind the one tier contract: transparent fallback and spread.

The engine keeps one scheduler and one ledger and sees one tier; a :class:`TierPool` decides
which of its members runs each job it is handed:

- ``fallback``: every job goes to the first usable member, in the order listed. A member becomes
  unusable when its own circuit breaker opens (``breaker_threshold`` consecutive job failures:
  startup timeouts, stuck or crashed workers, 5xx submits beyond the retry policy...) or at the
  first *tier-local* permanent failure (quota refused, nested virtualization missing, the tier's
  own identity refused): it is taken out, and the remaining tasks go to the next member in the
  same run. Failures that are the configuration's (image missing, invalid settings) are not
  absorbed: the engine stops the run as it does on one tier.
- ``spread``: every usable member at once; each job goes to the member with the most free
  workers (its own ``workers``, within its quota), so one scheduler feeds them all.

Going back (both modes): a member taken out gets one trial job after ``recover_after`` seconds
(doubled at each failed trial, capped at ``recover_max``); when that job reports a task the
member is usable again, and in ``fallback`` mode new jobs go back to it (the first listed usable
member); jobs already running elsewhere finish where they are.

Handles are ``<member>/<member's handle>``, so the ledger says which tier ran each job, and a
resumed session routes the jobs of an earlier one to the member that runs them.

Cost: each member is billed at its own price. The pool measures node time in node-seconds of
its first member's price (``price_per_node_hour``), so the engine's ``total_usd`` is right;
``describe()`` gives each member's own node hours and cost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ansible_collections.openadapt.azure_eval.plugins.module_utils.circuit_breaker import (
    BreakerState,
    CircuitBreaker,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import (
    NodeInterval,
    NodeUsage,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    AUTHORIZATION_FAILED,
    NESTED_VIRTUALIZATION_UNAVAILABLE,
    QUOTA_EXCEEDED,
    Failure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.rightsizing import (
    CLASSES,
    SizedScheduler,
    TaskClasses,
    too_small,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    BaseTier,
    FixedCapacity,
    JobStatus,
    MeasuresNodeTime,
    Tier,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    parse_lines,
)

log = logging.getLogger(__name__)

MODES = ("fallback", "spread")
# Permanent failures that are one tier's (its quota, its hardware, its own identity's grants):
# another tier can run the work. Anything else permanent is the configuration's and stops the run.
TIER_LOCAL_CODES = frozenset(
    {QUOTA_EXCEEDED, NESTED_VIRTUALIZATION_UNAVAILABLE, AUTHORIZATION_FAILED}
)
_SEP = "/"


@dataclass(frozen=True)
class Move:
    """A member taken out of rotation (or brought back)."""

    at: float
    tier: str
    to: str | None  # the member that takes new work now (None: none left)
    reason: str
    event: str = "out"  # "out" or "back"

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "event": self.event,
            "tier": self.tier,
            "to": self.to,
            "reason": self.reason,
        }


@dataclass
class Member:
    name: str
    tier: Tier | None  # None: it could not be built (its preflight refused it)
    workers: int | None  # None: the run's workers
    breaker: CircuitBreaker
    out_since: float | None = None
    out_reason: str | None = None
    recover_after: float = 600.0
    trial_job: str | None = None
    active: set[str] = field(default_factory=set)  # job keys running there
    # Job intervals of a member that does not measure its node time itself.
    intervals: dict[str, NodeInterval] = field(default_factory=dict)
    jobs_run: int = 0

    @property
    def price(self) -> float:
        return float(getattr(self.tier, "price_per_node_hour", 0.0) or 0.0)

    @property
    def measures(self) -> bool:
        return isinstance(self.tier, MeasuresNodeTime)

    default_workers: int = 1

    def capacity(self) -> int:
        workers = self.workers or self.default_workers
        if isinstance(self.tier, FixedCapacity):
            return max(0, min(workers, self.tier.capacity()))
        return workers


class NoUsableTier(RuntimeError):
    """Every member of the pool is out of rotation; the engine's own breaker decides what next."""


class TierPool(BaseTier):
    """The tier contract over several tiers (see the module's docstring)."""

    name = "auto"

    def __init__(
        self,
        members: Sequence[tuple[str, Tier | None, int | None]],
        *,
        mode: str = "fallback",
        breaker_threshold: int = 3,
        recover_after: float = 600.0,
        recover_max: float = 3600.0,
        unusable: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"eval_tier_mode must be one of {list(MODES)}, not {mode!r}")
        if not members:
            raise ValueError("a tier pool needs at least one tier")
        names = [name for name, _tier, _workers in members]
        if len(set(names)) != len(names):
            raise ValueError(f"each tier may be listed once: {names}")
        self.mode = mode
        self._clock = clock
        self._recover_max = recover_max
        self._lock = threading.RLock()
        self.members: list[Member] = [
            Member(
                name=name,
                tier=tier,
                workers=max(1, int(workers)) if workers else None,
                breaker=CircuitBreaker(name, breaker_threshold, recover_after, clock),
                recover_after=recover_after,
            )
            for name, tier, workers in members
        ]
        self._by_name = {m.name: m for m in self.members}
        self._owner: dict[str, Member] = {}  # job key -> member
        self._keys: dict[str, str] = {}  # handle -> job key
        self.moves: list[Move] = []
        # Right-sizing: the size classes each member takes (rightsizing.py); unset, any.
        self.member_sizes: dict[str, list[str]] = {}
        self.task_classes: TaskClasses | None = None
        self._reserved: dict[tuple[str, ...], Member] = {}  # chunk -> member (right-sizing)
        self._job_tasks: dict[str, list[str]] = {}
        for name, reason in (unusable or {}).items():
            self._take_out(self._by_name[name], f"not usable at start: {reason}")
        for member in self.members:
            if member.tier is None and member.out_since is None:
                self._take_out(member, "it could not be set up")
        built = [m for m in self.members if m.tier is not None]
        if not built:
            raise NoUsableTier("none of the listed tiers could be set up: " + self._out_summary())
        # The reference price: the first member's that has one.
        self.price_per_node_hour = next((m.price for m in built if m.price > 0), 0.0)
        codes: dict[str, str] = {}
        for member in reversed(built):
            codes.update(member.tier.failure_codes)
        self.failure_codes = codes
        # The engine keeps jobs queued ahead only when every member queues them for its nodes.
        self.queues_jobs = all(getattr(m.tier, "queues_jobs", False) for m in built)

    # what the engine asks -------------------------------------------------------------------

    def workers(self, requested: int) -> int:
        """Workers the engine runs: in spread mode, every member's together (a member without
        its own number runs the run's)."""
        for member in self.members:
            member.default_workers = max(1, requested)
        if self.mode == "spread":
            return sum(m.capacity() for m in self.members if m.tier is not None)
        return requested

    def job_failed(self, job_key: str, handle: str | None, failure: Failure) -> bool:
        """A job of the pool failed (the engine calls this for every transient failure, and
        for a permanent one before it stops the run). True when the failure is the member's
        business and another member takes the work: the engine neither stops nor counts it on
        its own breaker."""
        with self._lock:
            member = self._member_of(job_key, handle)
            if member is None:
                return False
            member.active.discard(job_key)
            if self._promote_if_too_small(member, job_key, failure) and failure.is_transient:
                return True  # the size's, not the tier's: a larger member takes the tasks
            local = not failure.is_transient and failure.code in TIER_LOCAL_CODES
            if not failure.is_transient and not local:
                return False  # the configuration's: the run stops
            if member.out_since is None or member.trial_job == job_key:
                member.breaker.record_failure()
                trial_failed = member.trial_job == job_key
                if local or trial_failed or member.breaker.state is not BreakerState.CLOSED:
                    if trial_failed:
                        member.recover_after = min(member.recover_after * 2, self._recover_max)
                    member.trial_job = None
                    self._take_out(member, failure.describe())
            if member.out_since is None:
                return False
            # A failure of a member out of rotation (a job still running there when it was
            # taken out) says nothing about the others.
            return self._usable(exclude=member) is not None

    # the Tier contract ----------------------------------------------------------------------

    def submit(self, job_key: str, task_ids: list[str]) -> str:
        with self._lock:
            member = self._owner.get(job_key)
            if member is None:
                member, trial = self._route(task_ids)
                if trial:
                    member.trial_job = job_key
                    log.warning(
                        "tier %s: trial job %s, to see whether it recovered", member.name, job_key
                    )
                self._owner[job_key] = member
            member.active.add(job_key)
            self._job_tasks[job_key] = list(task_ids)
        if member.tier is None:
            raise RuntimeError(
                f"tier {member.name} was chosen for job {job_key} but has no tier object"
            )
        inner = member.tier.submit(job_key, task_ids)
        handle = f"{member.name}{_SEP}{inner}"
        with self._lock:
            self._keys[handle] = job_key
            member.jobs_run += 1
            if not member.measures:
                member.intervals.setdefault(job_key, NodeInterval(job_key, self._clock()))
        return handle

    def status(self, handle: str) -> JobStatus:
        member, inner = self._split(handle)
        status = member.tier.status(inner)
        if status.state.terminal:
            with self._lock:
                job_key = self._key_of(member, handle)
                if job_key is not None:
                    member.active.discard(job_key)
                    self._end_interval(member, job_key, status.node_released_at)
        return status

    def read_new_lines(self, handle: str) -> list[str]:
        member, inner = self._split(handle)
        lines = member.tier.read_new_lines(inner)
        if lines and any(e.event == "task_result" for e in parse_lines(lines)):
            self._succeeded(member, self._key_of(member, handle))
        return lines

    def cancel(self, handle: str) -> None:
        member, inner = self._split(handle)
        member.tier.cancel(inner)
        with self._lock:
            job_key = self._key_of(member, handle)
            if job_key is not None:
                member.active.discard(job_key)
                self._end_interval(member, job_key, None)

    def handle_for(self, job_key: str) -> str | None:
        with self._lock:
            member = self._owner.get(job_key)
        if member is None or member.tier is None:
            return None
        inner = member.tier.handle_for(job_key)
        return f"{member.name}{_SEP}{inner}" if inner else None

    def describe(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            members = {
                m.name: {
                    **(m.tier.describe() if m.tier is not None else {"tier": m.name}),
                    "state": self._state(m, now),
                    "workers": m.capacity() if m.tier is not None else 0,
                    "jobs": m.jobs_run,
                    "out_reason": m.out_reason,
                }
                for m in self.members
            }
            return {
                "tier": self.name,
                "mode": self.mode,
                "tiers": [m.name for m in self.members],
                "members": members,
                "moves": [move.to_dict() for move in self.moves],
                "price_per_node_hour": self.price_per_node_hour,
            }

    def status_extra(self) -> dict[str, Any]:
        """For the live status file: each member's state and the moves so far."""
        now = self._clock()
        with self._lock:
            return {
                "tier_mode": self.mode,
                "tiers": {
                    m.name: {"state": self._state(m, now), "active_jobs": len(m.active)}
                    for m in self.members
                },
                "tier_moves": [move.to_dict() for move in self.moves],
            }

    def close(self) -> None:
        for member in self.members:
            if member.tier is not None:
                member.tier.close()

    # cost ------------------------------------------------------------------------------------

    def node_usage(self, now: float, *, final: bool) -> NodeUsage:
        """Every member's node time, in node-seconds at the pool's reference price."""
        seconds = still = 0.0
        held = 0
        for member, usage in self._usages(now, final):
            weight = self._weight(member)
            seconds += usage.node_seconds * weight
            still += usage.still_to_come * weight
            held += usage.nodes_held
        return NodeUsage(seconds, held, still)

    def member_costs(self, now: float) -> dict[str, dict[str, float]]:
        """Each member's node hours and cost so far, at its own price."""
        return {
            member.name: {
                "node_hours": round(usage.node_seconds / 3600.0, 6),
                "usd": round(usage.node_seconds * member.price / 3600.0, 6),
                "price_per_node_hour": member.price,
                "nodes_held": usage.nodes_held,
            }
            for member, usage in self._usages(now, final=False)
        }

    def unobserved_node_seconds(
        self, start: float, end: float, nodes_at_start: int, jobs: list[NodeInterval]
    ) -> float:
        seconds = 0.0
        for member in self.members:
            if member.tier is None:
                continue
            own = [j for j in jobs if self._owner.get(j.job_key) is member]
            if member.measures:
                part = member.tier.unobserved_node_seconds(start, end, nodes_at_start, own)
            else:
                part = sum(j.seconds(end) - max(0.0, start - j.acquired_at) for j in own)
            seconds += max(0.0, part) * self._weight(member)
        return seconds

    # routing ---------------------------------------------------------------------------------

    def _route(self, task_ids: Sequence[str]) -> tuple[Member, bool]:
        """The member for a new job, and whether it is a trial of a member taken out."""
        reserved = self._reserved.pop(tuple(task_ids), None)
        size_class = self.task_classes.of_chunk(task_ids) if self.task_classes else None
        trial = self._trial_candidate(size_class)
        if trial is not None:
            return trial, True
        if reserved is not None and reserved.out_since is None:
            return reserved, False
        member = self._usable(size_class=size_class)
        if member is None:
            raise NoUsableTier("no tier of the pool is usable: " + self._out_summary())
        return member, False

    def _trial_candidate(self, size_class: str | None) -> Member | None:
        """A member out of rotation whose recovery wait has passed gets one trial job."""
        now = self._clock()
        for member in self.members:
            if member.tier is None or member.out_since is None or member.trial_job is not None:
                continue
            if size_class is not None and not self._takes(member, size_class):
                continue
            if now - member.out_since >= member.recover_after and member.capacity() > 0:
                return member
        return None

    def _usable(
        self, exclude: Member | None = None, size_class: str | None = None, free: bool = False
    ) -> Member | None:
        candidates = [
            m
            for m in self.members
            if m is not exclude
            and m.tier is not None
            and m.out_since is None
            and m.capacity() > 0
            and (size_class is None or self._takes(m, size_class))
            and (not free or self._load(m) < m.capacity())
        ]
        if not candidates:
            return None
        if size_class is not None:
            # Right-sizing: a member of that very size before a larger one.
            best = min(self._fit(m, size_class) for m in candidates)
            candidates = [m for m in candidates if self._fit(m, size_class) == best]
        if self.mode == "fallback":
            return candidates[0]
        # spread: the member with the most free workers (ties: the first listed).
        return max(candidates, key=lambda m: (m.capacity() - self._load(m)) / m.capacity())

    # right-sizing (rightsizing.SizeRouter) ---------------------------------------------------

    def use_sizes(self, classes: TaskClasses) -> None:
        """Route each chunk to a member taking its size class (``member_sizes``)."""
        self.task_classes = classes

    def free_for(self, size_class: str) -> bool:
        with self._lock:
            if self.mode == "fallback":  # the engine's slots bound the one member in use
                return self._usable(size_class=size_class) is not None
            return self._usable(size_class=size_class, free=True) is not None

    def reserve(self, size_class: str, chunk: Sequence[str]) -> None:
        with self._lock:
            member = self._usable(size_class=size_class, free=self.mode == "spread")
            if member is not None:
                self._reserved[tuple(chunk)] = member

    def release(self, chunk: Sequence[str]) -> None:
        with self._lock:
            self._reserved.pop(tuple(chunk), None)

    def _takes(self, member: Member, size_class: str) -> bool:
        """A member takes its own classes and any smaller one."""
        sizes = self.member_sizes.get(member.name)
        if not sizes:
            return True
        return CLASSES.index(size_class) <= max(CLASSES.index(s) for s in sizes)

    def _fit(self, member: Member, size_class: str) -> int:
        sizes = self.member_sizes.get(member.name)
        if not sizes:
            return len(CLASSES)
        if size_class in sizes:
            return 0
        return 1 + max(CLASSES.index(s) for s in sizes)

    def _load(self, member: Member) -> int:
        return len(member.active) + sum(1 for m in self._reserved.values() if m is member)

    def _promote_if_too_small(self, member: Member, job_key: str, failure: Failure) -> bool:
        """Tasks of a job that was too small for them move up a size class; True if any did."""
        if self.task_classes is None or not too_small(failure.code, failure.message):
            return False
        offered = {
            c
            for m in self.members
            if m is not member and m.tier is not None
            for c in (self.member_sizes.get(m.name) or CLASSES)
        }
        moved = self.task_classes.promote(self._job_tasks.get(job_key, []), sorted(offered))
        if moved:
            log.warning(
                "tier %s was too small for %d task(s) (%s): they run on a larger size",
                member.name,
                len(moved),
                failure.code,
            )
        return bool(moved)

    def _take_out(self, member: Member, reason: str) -> None:
        member.out_since = self._clock()
        member.out_reason = reason
        nxt = self._usable(exclude=member)
        self.moves.append(Move(member.out_since, member.name, nxt.name if nxt else None, reason))
        if nxt is not None:
            log.warning(
                "tier %s is not usable (%s): remaining tasks go to tier %s; it gets a trial "
                "job after %.0fs",
                member.name,
                reason,
                nxt.name,
                member.recover_after,
            )
        else:
            log.warning("tier %s is not usable (%s) and no other tier is left", member.name, reason)

    def _succeeded(self, member: Member, job_key: str | None) -> None:
        with self._lock:
            member.breaker.record_success()
            if member.out_since is None:
                return
            if member.trial_job is None or member.trial_job != job_key:
                return  # a job that was running there when it was taken out
            member.out_since = None
            member.out_reason = None
            member.trial_job = None
            self.moves.append(
                Move(self._clock(), member.name, member.name, "a trial job ran", event="back")
            )
            log.warning(
                "tier %s recovered (a trial job reported a task): it takes work again", member.name
            )

    # bookkeeping -----------------------------------------------------------------------------

    def _split(self, handle: str) -> tuple[Member, str]:
        name, sep, inner = handle.partition(_SEP)
        member = self._by_name.get(name) if sep else None
        if member is None or member.tier is None:
            raise LookupError(f"job handle {handle!r} names no tier of this pool")
        return member, inner

    def _member_of(self, job_key: str, handle: str | None) -> Member | None:
        if handle:
            try:
                return self._split(handle)[0]
            except LookupError:
                return None
        return self._owner.get(job_key)

    def _key_of(self, member: Member, handle: str) -> str | None:
        return self._keys.get(handle)

    def _end_interval(self, member: Member, job_key: str, released_at: float | None) -> None:
        interval = member.intervals.get(job_key)
        if interval is not None and interval.released_at is None:
            member.intervals[job_key] = NodeInterval(
                job_key, interval.acquired_at, released_at or self._clock()
            )

    def _usages(self, now: float, final: bool) -> list[tuple[Member, NodeUsage]]:
        found = []
        for member in self.members:
            if member.tier is None:
                continue
            if member.measures:
                usage = member.tier.node_usage(now, final=final)
            else:
                with self._lock:
                    intervals = list(member.intervals.values())
                usage = NodeUsage(
                    sum(i.seconds(now) for i in intervals),
                    sum(1 for i in intervals if i.released_at is None),
                )
            found.append((member, usage))
        return found

    def _weight(self, member: Member) -> float:
        if self.price_per_node_hour > 0:
            return member.price / self.price_per_node_hour
        return 1.0 if member.price == 0 else 0.0

    def _state(self, member: Member, now: float) -> str:
        if member.tier is None:
            return "unavailable"
        if member.out_since is None:
            return "usable"
        return "trial" if member.trial_job else "out"

    def _out_summary(self) -> str:
        return "; ".join(f"{m.name}: {m.out_reason}" for m in self.members if m.out_reason)


@runtime_checkable
class FailsOver(Protocol):
    """A tier that routes jobs over several tiers (:class:`TierPool`); the engine's hooks."""

    def workers(self, requested: int) -> int: ...

    def job_failed(self, job_key: str, handle: str | None, failure: Failure) -> bool: ...

    def status_extra(self) -> dict[str, Any]: ...


def moves_on(tier: object, job_key: str, handle: str | None, failure: Failure) -> bool:
    """The engine's hook: True when a pool took the failing tier out and another takes the work."""
    return isinstance(tier, FailsOver) and tier.job_failed(job_key, handle, failure)


def status_extra(tier: object) -> dict[str, Any]:
    return tier.status_extra() if isinstance(tier, FailsOver) else {}


def sized_scheduler(
    tier: object, task_ids: Sequence[str], workers: int, factor: float, max_chunk: int | None
) -> SizedScheduler | None:
    """The engine's hook: a pool that right-sizes gets a scheduler with a queue per size."""
    if not isinstance(tier, TierPool) or tier.task_classes is None:
        return None
    return SizedScheduler(task_ids, workers, tier.task_classes, tier, factor, max_chunk)
