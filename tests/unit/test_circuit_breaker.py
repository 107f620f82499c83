from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.circuit_breaker import (
    BreakerState,
    CircuitBreaker,
    CircuitBreakers,
)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_opens_after_threshold_consecutive_failures():
    clock = Clock()
    breaker = CircuitBreaker("aml", failure_threshold=3, cooldown_s=60, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.allow() and breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.seconds_until_trial() == 60
    assert breaker.times_opened == 1


def test_success_resets_the_count():
    breaker = CircuitBreaker("aml", failure_threshold=2, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 1


def test_half_open_allows_exactly_one_trial_and_success_closes():
    clock = Clock()
    breaker = CircuitBreaker("batch", failure_threshold=1, cooldown_s=30, clock=clock)
    breaker.record_failure()
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() is True
    assert breaker.allow() is False  # second caller waits for the trial
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()


def test_failed_trial_reopens_for_a_full_cooldown():
    clock = Clock()
    breaker = CircuitBreaker("vm", failure_threshold=2, cooldown_s=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 10
    assert breaker.allow()
    clock.now += 3
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.seconds_until_trial() == 10
    assert breaker.times_opened == 2


def test_registry_keeps_one_breaker_per_target():
    breakers = CircuitBreakers(failure_threshold=1, cooldown_s=5, clock=Clock())
    breakers.for_target("aml").record_failure()
    assert breakers.for_target("aml").state is BreakerState.OPEN
    assert breakers.for_target("batch").state is BreakerState.CLOSED
    assert {b.target for b in breakers} == {"aml", "batch"}


def test_threshold_must_be_positive():
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
