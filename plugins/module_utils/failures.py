"""Failure classification: is it worth retrying, and if not, what must the user fix.

Inputs come from three places: a tier's job error (code and message), an exception raised by an
SDK call (azure-core ``HttpResponseError`` and friends, inspected by attribute so that this module
does not import the SDK), and the engine's own observations (startup timeout, stuck worker).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FailureKind(StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    code: str
    message: str
    hint: str | None = None
    retry_after: float | None = None

    @property
    def is_transient(self) -> bool:
        return self.kind is FailureKind.TRANSIENT

    def describe(self) -> str:
        text = f"{self.code}: {self.message}" if self.message else self.code
        return f"{text} (fix: {self.hint})" if self.hint else text


class FailureError(Exception):
    """An exception that already knows its classification."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


class PermanentFailure(FailureError):
    """Retrying cannot help; the message carries what the user must fix."""


class TransientFailure(FailureError):
    """Retrying may help."""


# Canonical codes used across the project.
THROTTLED = "Throttled"
SERVER_ERROR = "ServerError"
CONNECTION_ERROR = "ConnectionError"
NODE_PREEMPTED = "NodePreempted"
STARTUP_TIMEOUT = "StartupTimeout"
STUCK = "Stuck"
WORKER_CRASH = "WorkerCrash"
TASK_ERROR = "TaskError"
JOB_CANCELED = "JobCanceled"
UNKNOWN = "Unknown"
IMAGE_NOT_FOUND = "ImageNotFound"
IMAGE_PULL_DENIED = "ImagePullDenied"
QUOTA_EXCEEDED = "QuotaExceeded"
INVALID_CONFIGURATION = "InvalidConfiguration"
NESTED_VIRTUALIZATION_UNAVAILABLE = "NestedVirtualizationUnavailable"
AUTHENTICATION_FAILED = "AuthenticationFailed"
AUTHORIZATION_FAILED = "AuthorizationFailed"

HINTS: dict[str, str] = {
    IMAGE_NOT_FOUND: (
        "import the image into the registry (az acr import --name <acr> --source "
        "docker.io/windowsarena/winarena:latest --image winarena:latest) or correct the image "
        "reference in the configuration"
    ),
    IMAGE_PULL_DENIED: (
        "grant the AcrPull role on the registry to the identity that pulls the image (the Azure "
        "ML workspace identity, the Batch pool identity or the VM identity), or attach the "
        "registry to the workspace"
    ),
    QUOTA_EXCEEDED: (
        "request a quota increase for this VM family in this region, choose a smaller vm_size, "
        "or lower the number of workers"
    ),
    INVALID_CONFIGURATION: "correct the setting named in the message and run again",
    NESTED_VIRTUALIZATION_UNAVAILABLE: (
        "use a VM size that supports nested virtualization (Standard_D4s_v5, Dv3/Dsv3 series) "
        "with security type Standard, not TrustedLaunch"
    ),
    AUTHENTICATION_FAILED: (
        "check the credentials (client id, secret, tenant, subscription) or run az login again; "
        "the identity provider rejected them"
    ),
    AUTHORIZATION_FAILED: (
        "grant the identity a role on the target scope (for example Contributor on the resource "
        "group, AcrPull on the registry)"
    ),
}

_TRANSIENT_CODES = frozenset(
    {
        THROTTLED,
        SERVER_ERROR,
        CONNECTION_ERROR,
        NODE_PREEMPTED,
        STARTUP_TIMEOUT,
        STUCK,
        WORKER_CRASH,
        TASK_ERROR,
        JOB_CANCELED,
        UNKNOWN,
    }
)

# Vendor codes shared by every service (Azure ARM, ACR, docker) mapped to canonical ones; keys are
# lowercase. A tier's own codes (Azure ML's run-history inner codes, Batch's exit codes) sit in
# the tier's ``failure_codes`` and are passed in as ``codes``, consulted first.
_CODE_ALIASES: dict[str, str] = {
    "throttled": THROTTLED,
    "toomanyrequests": THROTTLED,
    "throttling": THROTTLED,
    "requestthrottled": THROTTLED,
    "serverbusy": THROTTLED,
    "internalservererror": SERVER_ERROR,
    "internalerror": SERVER_ERROR,
    "serviceunavailable": SERVER_ERROR,
    "badgateway": SERVER_ERROR,
    "gatewaytimeout": SERVER_ERROR,
    "servertimeout": SERVER_ERROR,
    "operationtimedout": SERVER_ERROR,
    "connectionerror": CONNECTION_ERROR,
    "servicerequesterror": CONNECTION_ERROR,
    "serviceresponseerror": CONNECTION_ERROR,
    "nodepreempted": NODE_PREEMPTED,
    "preempted": NODE_PREEMPTED,
    "nodeevicted": NODE_PREEMPTED,
    "spotevicted": NODE_PREEMPTED,
    "lowprioritypreempted": NODE_PREEMPTED,
    "startuptimeout": STARTUP_TIMEOUT,
    "containerstartuptimeout": STARTUP_TIMEOUT,
    "stuck": STUCK,
    "workercrash": WORKER_CRASH,
    "workerexited": WORKER_CRASH,
    "taskerror": TASK_ERROR,
    "jobcanceled": JOB_CANCELED,
    "canceled": JOB_CANCELED,
    "imagenotfound": IMAGE_NOT_FOUND,
    "manifestunknown": IMAGE_NOT_FOUND,
    "manifest_unknown": IMAGE_NOT_FOUND,
    "name_unknown": IMAGE_NOT_FOUND,
    "repositorynotfound": IMAGE_NOT_FOUND,
    "imagepullunauthorized": IMAGE_PULL_DENIED,
    "imagepulldenied": IMAGE_PULL_DENIED,
    "imagepullfailed": IMAGE_PULL_DENIED,
    "containerimagepullfailed": IMAGE_PULL_DENIED,
    "unauthorized": IMAGE_PULL_DENIED,
    "denied": IMAGE_PULL_DENIED,
    "quotaexceeded": QUOTA_EXCEEDED,
    "operationnotallowed": QUOTA_EXCEEDED,
    "accountquotaexceeded": QUOTA_EXCEEDED,
    "insufficientquota": QUOTA_EXCEEDED,
    "skunotavailable": QUOTA_EXCEEDED,
    "invalidconfiguration": INVALID_CONFIGURATION,
    "invalidrequestcontent": INVALID_CONFIGURATION,
    "invalidparameter": INVALID_CONFIGURATION,
    "invalidpropertyvalue": INVALID_CONFIGURATION,
    "validationerror": INVALID_CONFIGURATION,
    "badrequest": INVALID_CONFIGURATION,
    "resourcenotfound": INVALID_CONFIGURATION,
    "resourcegroupnotfound": INVALID_CONFIGURATION,
    "nestedvirtualizationunavailable": NESTED_VIRTUALIZATION_UNAVAILABLE,
    "authenticationfailed": AUTHENTICATION_FAILED,
    "invalidauthenticationtoken": AUTHENTICATION_FAILED,
    "expiredauthenticationtoken": AUTHENTICATION_FAILED,
    "invalid_client": AUTHENTICATION_FAILED,
    "unauthorized_client": AUTHENTICATION_FAILED,
    "authorizationfailed": AUTHORIZATION_FAILED,
    "forbidden": AUTHORIZATION_FAILED,
}

# Umbrella codes that say only "it failed" (Azure ML's UserError for any non-zero exit, Batch's
# FailureExitCode): the message decides, and these are the fallbacks when it does not.
_GENERIC_CODES: dict[str, str] = {
    "usererror": WORKER_CRASH,
    "executionfailed": WORKER_CRASH,
    "failureexitcode": WORKER_CRASH,
    "jobfailed": UNKNOWN,
    "failed": UNKNOWN,
    "systemerror": SERVER_ERROR,
    "serviceerror": SERVER_ERROR,
}

# Message patterns, checked in order (permanent ones first: "pull access denied ... timeout"
# must not be mistaken for a retryable timeout).
_MESSAGE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"nested virtuali[sz]ation|/dev/kvm|kvm.*(not available|unavailable)", re.I),
        NESTED_VIRTUALIZATION_UNAVAILABLE,
    ),
    (
        re.compile(
            r"pull access denied|unauthorized: authentication required|denied: requested access"
            r"|insufficient_scope|not authorized to (pull|access)|acrpull",
            re.I,
        ),
        IMAGE_PULL_DENIED,
    ),
    (
        re.compile(
            r"manifest unknown|manifest for .* not found|repository .* not found"
            r"|image .*not found|name unknown|no such image",
            re.I,
        ),
        IMAGE_NOT_FOUND,
    ),
    (
        re.compile(r"quota|exceed(s|ed)? .*limit .*cores|insufficient capacity", re.I),
        QUOTA_EXCEEDED,
    ),
    (
        re.compile(r"AADSTS\d+|invalid client secret|authentication failed", re.I),
        AUTHENTICATION_FAILED,
    ),
    (re.compile(r"does not have authorization|authorizationfailed", re.I), AUTHORIZATION_FAILED),
    (re.compile(r"preempt|evicted|low.?priority node", re.I), NODE_PREEMPTED),
    (re.compile(r"too many requests|throttl|rate limit", re.I), THROTTLED),
    (
        re.compile(r"connection (reset|refused|aborted)|timed out|name resolution|temporar", re.I),
        CONNECTION_ERROR,
    ),
    (
        re.compile(r"invalid (value|parameter|configuration)|validation failed", re.I),
        INVALID_CONFIGURATION,
    ),
]


def _status_code_class(status: int) -> str | None:
    if status == 429:
        return THROTTLED
    if status == 408:
        return CONNECTION_ERROR
    if status >= 500:
        return SERVER_ERROR
    if status == 401:
        return AUTHENTICATION_FAILED
    if status == 403:
        return AUTHORIZATION_FAILED
    if status in (400, 404, 422):
        return INVALID_CONFIGURATION
    if status == 409:
        # Conflicts are usually "another operation is in progress".
        return SERVER_ERROR
    return None


def kind_of(code: str) -> FailureKind:
    return FailureKind.TRANSIENT if code in _TRANSIENT_CODES else FailureKind.PERMANENT


def canonical_code(code: str | None, codes: Mapping[str, str] | None = None) -> str | None:
    """The canonical code of a vendor code: the tier's table ``codes`` first, then the shared
    one."""
    if not code:
        return None
    if code in HINTS or code in _TRANSIENT_CODES:
        return code
    key = _normalise(code)
    if codes and key in codes:
        return codes[key]
    return _CODE_ALIASES.get(key)


def _normalise(code: str | None) -> str:
    return (code or "").strip().lower().replace(" ", "")


def classify(
    code: str | None = None,
    message: str | None = None,
    *,
    status_code: int | None = None,
    headers: Mapping[str, str] | None = None,
    now: Callable[[], float] = time.time,
    codes: Mapping[str, str] | None = None,
) -> Failure:
    """Classify an error described by a code, a message, an HTTP status and response headers.

    Precedence: a recognised code (the tier's ``codes`` before the shared table), then the
    message, then the HTTP status. Anything unknown is transient: the engine's attempt caps and
    circuit breaker bound the cost of retrying it.
    """
    message = message or ""
    tier_code = canonical_code(code, codes) if codes and _normalise(code) in codes else None
    generic = None if tier_code else (_GENERIC_CODES.get(_normalise(code)) if code else None)
    canonical = tier_code or (None if generic else canonical_code(code))
    if canonical is None:
        canonical = _code_from_message(message)
        # A 429 is the service asking to slow down: words in its text ("quota" of requests,
        # "invalid") must not make it permanent. Only a recognised error code can.
        if (
            status_code == 429
            and canonical is not None
            and kind_of(canonical) is FailureKind.PERMANENT
        ):
            canonical = THROTTLED
    if canonical is None and status_code is not None:
        canonical = _status_code_class(status_code)
    if canonical is None:
        canonical = generic or UNKNOWN
    retry_after = parse_retry_after(headers, now=now) if headers else None
    kind = kind_of(canonical)
    detail = message or (code or "")
    if code and canonical_code(code, codes) is None and not generic and code not in detail:
        detail = f"[{code}] {detail}" if detail else code
    return Failure(
        kind=kind,
        code=canonical,
        message=detail,
        hint=HINTS.get(canonical) if kind is FailureKind.PERMANENT else None,
        retry_after=retry_after,
    )


def _code_from_message(message: str) -> str | None:
    for pattern, code in _MESSAGE_PATTERNS:
        if pattern.search(message):
            return code
    return None


def classify_exception(
    exc: BaseException,
    *,
    now: Callable[[], float] = time.time,
    codes: Mapping[str, str] | None = None,
) -> Failure:
    """Classify an exception from an SDK call, the standard library or this project (``codes``:
    the table of the tier whose call raised it)."""
    if isinstance(exc, FailureError):
        return exc.failure
    status_code = getattr(exc, "status_code", None)
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) if error is not None else None
    message = _text(getattr(exc, "message", None)) or _text(getattr(error, "message", None))
    message = message or str(exc) or type(exc).__name__
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) if response is not None else None
    if status_code is None and response is not None:
        status_code = getattr(response, "status_code", None)
    if code is None and status_code is None:
        code = _code_from_exception_type(exc)
        if code == WORKER_CRASH:
            message = f"{type(exc).__name__}: {message}"
    return classify(
        code if isinstance(code, str) else None,
        message,
        status_code=status_code if isinstance(status_code, int) else None,
        headers=headers if _is_mapping(headers) else None,
        now=now,
        codes=codes,
    )


def _code_from_exception_type(exc: BaseException) -> str | None:
    names = {cls.__name__ for cls in type(exc).__mro__}
    # azure-core's transport errors, without importing azure-core.
    if names & {"ServiceRequestError", "ServiceResponseError", "ServiceRequestTimeoutError"}:
        return CONNECTION_ERROR
    if names & {"ClientAuthenticationError", "CredentialUnavailableError"}:
        return AUTHENTICATION_FAILED
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return CONNECTION_ERROR
    if isinstance(exc, ValueError):
        return INVALID_CONFIGURATION
    if isinstance(exc, TypeError):
        # A bug in the code the call ran (the tier's or an SDK's), not a setting to correct: a
        # crash of that job, retried within the attempt caps.
        return WORKER_CRASH
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    # azure-batch wraps messages in an object with ``.value``.
    inner = getattr(value, "value", None)
    return str(inner if isinstance(inner, str) else value)


def _is_mapping(value: Any) -> bool:
    return value is not None and hasattr(value, "get") and hasattr(value, "items")


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``x-ms-retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` is either delta-seconds or an HTTP date; a date in the past yields 0.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = lowered.get(name)
        if value:
            try:
                return max(0.0, float(value) / 1000.0)
            except ValueError:
                pass
    value = lowered.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())
