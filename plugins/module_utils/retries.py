"""The project's one retry policy, applied per call by choice (like amazon.aws ``AWSRetry``).

Transient failures are retried with exponential backoff and jitter; a ``Retry-After`` the service
sent wins when it asks for longer. Permanent failures are re-raised at once. Attempts and the
total time spent waiting are both capped.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

try:
    from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
    from tenacity.stop import stop_base
    from tenacity.wait import wait_exponential_jitter

    TENACITY_IMPORT_ERROR = None
except ImportError:
    # reported by the callers with missing_required_lib("tenacity")
    TENACITY_IMPORT_ERROR = traceback.format_exc()
    stop_base = object

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    Failure,
    classify_exception,
)

T = TypeVar("T")
RetryListener = Callable[[int, Failure, float], None]


def _is_transient(codes: Mapping[str, str] | None) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        # KeyboardInterrupt, SystemExit and the engine's cancellation are never retried.
        return isinstance(exc, Exception) and classify_exception(exc, codes=codes).is_transient

    return check


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float) -> float:
    """Exponential backoff with jitter for the ``attempt``-th retry (1-based)."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempt)
    return wait_exponential_jitter(multiplier=initial, max=maximum, jitter=jitter)(state)


class _stop_after_total_delay(stop_base):
    """Stop when the next sleep would take the total time slept past the cap."""

    def __init__(self, max_total_delay: float) -> None:
        self.max_total_delay = max_total_delay

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.idle_for + retry_state.upcoming_sleep > self.max_total_delay


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to retry: values only, comparable and safe to share. The
    runtime hooks (how to sleep, who hears of a retry) come with :meth:`with_hooks`."""

    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0
    max_total_delay: float = 300.0
    jitter: float = 1.0

    def wait_for(self, attempt: int, failure: Failure | None = None) -> float:
        """Delay before retry number ``attempt``: max(backoff, the service's Retry-After)."""
        delay = backoff_delay(attempt, self.initial_delay, self.max_delay, self.jitter)
        if failure is not None and failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        return delay

    def with_hooks(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: RetryListener | None = None,
        codes: Mapping[str, str] | None = None,
    ) -> Retrier:
        """This policy applied with these hooks; ``codes`` is the failure table of the tier
        whose calls are retried."""
        return Retrier(self, sleep=sleep, on_retry=on_retry, codes=codes)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.with_hooks().call(fn, *args, **kwargs)

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        return self.with_hooks()(fn)


@dataclass(frozen=True)
class Retrier:
    """A :class:`RetryPolicy` with its runtime hooks."""

    policy: RetryPolicy
    sleep: Callable[[float], None] = time.sleep
    on_retry: RetryListener | None = None
    codes: Mapping[str, str] | None = None

    def _classify(self, exc: BaseException) -> Failure:
        return classify_exception(exc, codes=self.codes)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        failure = self._classify(exc) if exc is not None else None
        return self.policy.wait_for(state.attempt_number, failure)

    def _before_sleep(self, state: RetryCallState) -> None:
        if self.on_retry is None or state.outcome is None:
            return
        exc = state.outcome.exception()
        if exc is not None:
            self.on_retry(state.attempt_number, self._classify(exc), state.upcoming_sleep)

    def retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception(_is_transient(self.codes)),
            wait=self._wait,
            stop=stop_after_attempt(self.policy.max_attempts)
            | _stop_after_total_delay(self.policy.max_total_delay),
            sleep=self.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.retrying()(fn, *args, **kwargs)

    def __call__(self, fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return self.call(fn, *args, **kwargs)

        return wrapper


def retry_transient(
    policy: RetryPolicy | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: RetryListener | None = None,
    **values: Any,
) -> Retrier:
    """Decorator: ``@retry_transient(max_attempts=3)`` retries the function's transient failures."""
    return dataclasses.replace(policy or RetryPolicy(), **values).with_hooks(
        sleep=sleep, on_retry=on_retry
    )
