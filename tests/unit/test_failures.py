from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    FailureKind,
    PermanentFailure,
    classify,
    classify_exception,
    parse_retry_after,
)


class _Error:
    def __init__(self, code, message):
        self.code = code
        self.message = message


class _Response:
    def __init__(self, status_code, headers):
        self.status_code = status_code
        self.headers = headers


class FakeHttpResponseError(Exception):
    """Shaped like azure-core's HttpResponseError: status_code, error.code, message, response."""

    def __init__(self, status_code, code, message, headers=None):
        super().__init__(message)
        self.status_code = status_code
        self.error = _Error(code, message)
        self.message = message
        self.response = _Response(status_code, headers or {})


class ServiceRequestError(Exception):
    """Same name as azure-core's connection error."""


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("TooManyRequests", "", "Throttled"),
        (None, "The service is unavailable", "Unknown"),
        ("InternalServerError", "boom", "ServerError"),
        ("NodePreempted", "low priority node was preempted", "NodePreempted"),
        (None, "Spot VM evicted by Azure", "NodePreempted"),
        ("StartupTimeout", "no event", "StartupTimeout"),
        ("Stuck", "no event", "Stuck"),
        ("WorkerExited", "worker exited with code 137", "WorkerCrash"),
    ],
)
def test_transient_errors(code, message, expected):
    failure = classify(code, message)
    assert failure.kind is FailureKind.TRANSIENT
    assert failure.code == expected
    assert failure.hint is None


@pytest.mark.parametrize(
    ("code", "message", "expected", "hint_words"),
    [
        (
            None,
            "manifest unknown: manifest tagged by latest is not found",
            "ImageNotFound",
            "az acr import",
        ),
        ("ImagePullFailed", "pull access denied for winarena", "ImagePullDenied", "AcrPull"),
        (None, "unauthorized: authentication required", "ImagePullDenied", "AcrPull"),
        ("QuotaExceeded", "Standard DSv5 Family vCPUs", "QuotaExceeded", "quota increase"),
        (
            None,
            "Operation could not be completed as it results in exceeding approved "
            "standardDv3Family Cores quota",
            "QuotaExceeded",
            "quota",
        ),
        ("BadRequest", "vm_size is empty", "InvalidConfiguration", "correct the setting"),
        (
            None,
            "KVM is not available: nested virtualization disabled (TrustedLaunch)",
            "NestedVirtualizationUnavailable",
            "TrustedLaunch",
        ),
        ("InvalidAuthenticationToken", "token expired", "AuthenticationFailed", "credentials"),
        (
            None,
            "AADSTS7000215: Invalid client secret provided",
            "AuthenticationFailed",
            "credentials",
        ),
    ],
)
def test_permanent_errors_carry_a_hint(code, message, expected, hint_words):
    failure = classify(code, message)
    assert failure.kind is FailureKind.PERMANENT
    assert failure.code == expected
    assert hint_words in failure.hint
    assert message in failure.message


def test_code_wins_over_message_and_status_is_last_resort():
    assert classify("NodePreempted", "quota exceeded somewhere").code == "NodePreempted"
    assert classify(None, "", status_code=503).code == "ServerError"
    assert classify(None, "", status_code=401).kind is FailureKind.PERMANENT
    assert classify(None, "", status_code=418).code == "Unknown"


def test_unknown_vendor_code_is_kept_in_the_message():
    failure = classify("WeirdNewCode", "something odd")
    assert failure.code == "Unknown" and failure.is_transient
    assert "WeirdNewCode" in failure.message


def test_http_response_error_with_retry_after_seconds():
    exc = FakeHttpResponseError(429, "TooManyRequests", "slow down", {"Retry-After": "17"})
    failure = classify_exception(exc)
    assert failure.code == "Throttled" and failure.is_transient
    assert failure.retry_after == 17.0


def test_http_response_error_with_ms_header_prefers_milliseconds():
    exc = FakeHttpResponseError(
        503, None, "busy", {"x-ms-retry-after-ms": "2500", "Retry-After": "10"}
    )
    failure = classify_exception(exc)
    assert failure.code == "ServerError"
    assert failure.retry_after == 2.5


def test_http_403_pull_denied_is_permanent_with_acrpull_hint():
    exc = FakeHttpResponseError(
        403, "AuthorizationFailed", "The client does not have authorization to perform action"
    )
    failure = classify_exception(exc)
    assert failure.kind is FailureKind.PERMANENT
    assert "role" in failure.hint


def test_connection_errors_by_type_are_transient():
    assert classify_exception(ConnectionResetError("reset by peer")).code == "ConnectionError"
    assert classify_exception(ServiceRequestError("dns")).code == "ConnectionError"
    assert classify_exception(TimeoutError()).is_transient


def test_failure_error_keeps_its_classification():
    original = classify("QuotaExceeded", "no cores")
    err = PermanentFailure(original)
    assert classify_exception(err) is original
    assert "quota increase" in str(err)


def test_retry_after_http_date_and_garbage():
    now = datetime(2026, 1, 18, 12, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 1, 18, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert parse_retry_after({"Retry-After": later}, now=lambda: now) == pytest.approx(30.0)
    past = format_datetime(datetime(2026, 1, 18, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=lambda: now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


def test_umbrella_codes_let_the_message_decide():
    kvm = classify(
        "UserError",
        "ERROR: KVM acceleration is not available: /dev/kvm not found. Execution failed.",
    )
    assert kvm.code == "NestedVirtualizationUnavailable" and not kvm.is_transient
    crash = classify("UserError", "User process 'bash' exited with status code 137")
    assert crash.code == "WorkerCrash" and crash.is_transient
    batch = classify("FailureExitCode", "The task exited with an exit code representing a failure")
    assert batch.code == "WorkerCrash"
    assert classify("SystemError", "node agent lost").code == "ServerError"


def test_a_tiers_own_codes_are_consulted_before_the_shared_table():
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import (
        FAILURE_CODES,
    )

    # Azure ML's inner codes are the AML tier's: known with its table, unknown without.
    assert classify("UserProcessFailed", "exit 3", codes=FAILURE_CODES).code == "WorkerCrash"
    assert classify("KvmUnavailable", "", codes=FAILURE_CODES).code == (
        "NestedVirtualizationUnavailable"
    )
    assert classify("UserProcessFailed", "exit 3").code == "Unknown"
    # A tier's table wins over the shared generic codes.
    assert classify("UserError", "x", codes={"usererror": "ImageNotFound"}).code == "ImageNotFound"


def test_an_unexpected_type_error_is_a_transient_crash_of_the_job():
    failure = classify_exception(TypeError("unsupported operand type(s) for +: 'int' and 'str'"))
    assert failure.is_transient
    assert failure.code == "WorkerCrash"
    assert failure.message.startswith("TypeError: ")
    assert classify_exception(ValueError("vm_size is empty")).code == "InvalidConfiguration"


def test_every_tier_module_is_registered():
    from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers import registry

    assert registry.names() == ["aml", "local", "vm"]
    with pytest.raises(registry.UnknownTier, match="registered tiers: aml, local, vm"):
        registry.get("batch")
