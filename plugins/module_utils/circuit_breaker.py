"""A circuit breaker per target: stop feeding work to something that keeps failing.

CLOSED: everything allowed. After ``failure_threshold`` consecutive failures: OPEN, nothing
allowed for ``cooldown_s``. Then HALF_OPEN: one trial is allowed; its success closes the breaker,
its failure opens it again for another cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    target: str
    failure_threshold: int = 3
    cooldown_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    consecutive_failures: int = 0
    times_opened: int = 0
    opened_at: float | None = None
    _trial_in_flight: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return BreakerState.CLOSED
        if self.clock() - self.opened_at >= self.cooldown_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """May a new unit of work be sent? In HALF_OPEN only the first caller gets a yes."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def seconds_until_trial(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - self.clock())

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        was_trial = self._trial_in_flight
        self._trial_in_flight = False
        if was_trial or self.consecutive_failures >= self.failure_threshold:
            if self.opened_at is None or was_trial:
                self.times_opened += 1
            self.opened_at = self.clock()


class CircuitBreakers:
    """One breaker per target name, created on first use with the same settings."""

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = (failure_threshold, cooldown_s, clock)
        self._breakers: dict[str, CircuitBreaker] = {}

    def for_target(self, target: str) -> CircuitBreaker:
        if target not in self._breakers:
            threshold, cooldown, clock = self._settings
            self._breakers[target] = CircuitBreaker(target, threshold, cooldown, clock)
        return self._breakers[target]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._breakers.values())
