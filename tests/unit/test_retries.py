from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    Failure,
    FailureKind,
    TransientFailure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.retries import (
    RetryPolicy,
    backoff_delay,
    retry_transient,
)


class Throttled(Exception):
    def __init__(self, retry_after=None):
        super().__init__("throttled")
        self.status_code = 429
        self.message = "Too many requests"
        self.response = (
            type("R", (), {"headers": {"Retry-After": str(retry_after)}})()
            if (retry_after is not None)
            else None
        )


class Forbidden(Exception):
    status_code = 403
    message = "does not have authorization"


class Flaky:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, value):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return value * 2


def test_transient_failures_are_retried_until_success():
    sleeps = []
    fn = Flaky([ConnectionResetError("reset"), Throttled()])
    policy = RetryPolicy(max_attempts=5, initial_delay=1.0, jitter=0.0).with_hooks(
        sleep=sleeps.append
    )
    assert policy.call(fn, 21) == 42
    assert fn.calls == 3
    assert sleeps == [1.0, 2.0]  # exponential, no jitter


def test_retry_after_wins_when_longer_than_backoff():
    sleeps = []
    fn = Flaky([Throttled(retry_after=30)])
    RetryPolicy(initial_delay=1.0, jitter=0.0).with_hooks(sleep=sleeps.append).call(fn, 1)
    assert sleeps == [30.0]


def test_permanent_failure_is_reraised_at_once():
    sleeps = []
    fn = Flaky([Forbidden()])
    with pytest.raises(Forbidden):
        RetryPolicy().with_hooks(sleep=sleeps.append).call(fn, 1)
    assert fn.calls == 1 and sleeps == []


def test_attempt_cap_reraises_the_last_transient_error():
    sleeps = []
    fn = Flaky([TimeoutError("t1"), TimeoutError("t2"), TimeoutError("t3"), TimeoutError("t4")])
    with pytest.raises(TimeoutError, match="t3"):
        RetryPolicy(max_attempts=3, jitter=0.0).with_hooks(sleep=sleeps.append).call(fn, 1)
    assert fn.calls == 3 and len(sleeps) == 2


def test_total_delay_cap_stops_before_sleeping_past_it():
    sleeps = []
    fn = Flaky([Throttled(retry_after=40), Throttled(retry_after=40), Throttled(retry_after=40)])
    with pytest.raises(Throttled):
        RetryPolicy(max_attempts=10, max_total_delay=60).with_hooks(sleep=sleeps.append).call(fn, 1)
    assert sleeps == [40.0]  # a second 40 s wait would exceed the 60 s budget
    assert fn.calls == 2


def test_backoff_has_bounded_jitter_and_cap():
    for attempt in range(1, 8):
        delay = backoff_delay(attempt, initial=2.0, maximum=30.0, jitter=1.0)
        base = min(2.0 * 2 ** (attempt - 1), 30.0)
        assert base <= delay <= min(base + 1.0, 30.0) or delay == 30.0


def test_decorator_form_and_listener_see_each_retry():
    seen = []
    sleeps = []
    fn = Flaky([TransientFailure(Failure(FailureKind.TRANSIENT, "NodePreempted", "evicted"))])

    @retry_transient(
        jitter=0.0, sleep=sleeps.append, on_retry=lambda a, f, d: seen.append((a, f.code, d))
    )
    def call(value):
        return fn(value)

    assert call(5) == 10
    assert seen == [(1, "NodePreempted", 1.0)]


def test_keyboard_interrupt_is_never_retried():
    fn = Flaky([KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        RetryPolicy().with_hooks(sleep=lambda s: None).call(fn, 1)
    assert fn.calls == 1
