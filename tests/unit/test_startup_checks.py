"""The engine's boot watch: the worker's boot events, the VM boot limit, the classification of
boot failures, and the report's boot time per job."""

from __future__ import annotations

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import FailureKind
from ansible_collections.openadapt.azure_eval.plugins.module_utils.startup_checks import (
    BootWatch,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    WorkerEvent,
)


def event(name, **fields):
    return WorkerEvent(name, 0.0, "w", fields)


def test_boot_events_are_taken_and_other_events_are_left_to_the_engine():
    watch = BootWatch(60)
    assert watch.take("j", event("image_ready", path="/storage"), 1.0)
    assert watch.take("j", event("vm_starting", attempt=1), 2.0)
    assert watch.take("j", event("vm_ready", attempt=1, boot_s=30.5), 32.0)
    assert not watch.take("j", event("task_started", task_id="t"), 33.0)
    assert not watch.take("j", event("failed", code="AuthorizationFailed", message="m"), 34.0)
    report = watch.report()
    assert report["jobs"]["j"] == {
        "boot_s": 30.5,
        "boots": 1,
        "restarts": 0,
        "ready": True,
        "failure": None,
    }
    assert report["median_boot_s"] == 30.5 and report["vm_boot_timeout_s"] == 60


def test_a_boot_past_the_limit_is_transient_and_the_poll_comes_at_the_deadline():
    watch = BootWatch(100)
    watch.take("j", event("vm_starting", attempt=1), 10.0)
    assert watch.poll_by("j", 500.0) == 110.0
    assert watch.poll_by("j", 50.0) == 50.0
    assert watch.failure("j", 110.0) is None
    failure = watch.failure("j", 110.5)
    assert failure.kind is FailureKind.TRANSIENT and failure.code == "VmBootTimeout"
    assert "eval_vm_boot_timeout=100s" in failure.message


def test_a_restart_starts_the_boot_clock_again():
    watch = BootWatch(100)
    watch.take("j", event("vm_starting", attempt=1), 0.0)
    watch.take("j", event("vm_ready", attempt=1, boot_s=5), 5.0)
    assert watch.failure("j", 1000.0) is None and watch.poll_by("j", 9.0) == 9.0
    watch.take("j", event("vm_lost", task_id="t"), 900.0)
    watch.take("j", event("vm_starting", attempt=2), 901.0)
    assert watch.failure("j", 1000.0) is None
    assert watch.failure("j", 1002.0).code == "VmBootTimeout"
    assert watch.report()["jobs"]["j"]["restarts"] == 1


@pytest.mark.parametrize(
    ("code", "kind", "fix"),
    [
        ("GoldenImageMissing", FailureKind.PERMANENT, "playbooks/waa_image.yml"),
        ("NestedVirtualizationUnavailable", FailureKind.PERMANENT, "security type Standard"),
        ("OutOfDisk", FailureKind.PERMANENT, "larger disk"),
        ("VmUnresponsive", FailureKind.TRANSIENT, None),
        ("VmBootTimeout", FailureKind.TRANSIENT, None),
    ],
)
def test_boot_failures_are_classified_with_their_fix(code, kind, fix):
    watch = BootWatch(100)
    failed = event("failed", code=code, message="what happened", boot_output=["a", "b"])
    assert watch.take("j", failed, 1.0)
    failure = watch.failure("j", 1.0)
    assert failure.kind is kind and failure.code == code
    assert "boot output: a | b" in failure.message
    if fix:
        assert fix in failure.hint
    assert watch.report()["jobs"]["j"]["failure"] == code


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError):
        BootWatch(0)
