"""The tier contract (``plugins/module_utils/tiers/base.py``), checked against every registered
tier: the local tier as processes of this controller, Azure ML on the emulator through the real
SDK. A new tier registers a harness here; a registered tier without one fails the suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from aml_setup import FAST_JOB_ENV, WORKER_SCRIPT, build
from vm_setup import bootstrap, key_file, tier_hosts
from vm_setup import build as build_vms

from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    UNKNOWN,
    canonical_code,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers import registry
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers import vm as vm_tier
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.base import (
    JobState,
    JobStatus,
    Tier,
    TierContext,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.local import LocalTier
from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    WorkerEvent,
    parse_lines,
)
from localazure.workload.task_model import list_tasks

pytestmark = pytest.mark.integration

TASKS = list_tasks()[:2]
# A time scale at which one task runs for minutes: a job that is still running when cancelled.
SLOW_ENV = {"HEARTBEAT_INTERVAL": "0.25", "WAA_STANDIN_TIME_SCALE": "5"}


@dataclass
class Harness:
    """How to get a tier of one kind for the contract tests."""

    make: Callable[[dict[str, str]], Tier]  # a tier whose workers get this environment
    restart: Callable[[], None] | None = None  # restart what holds the tier's state
    made: list[Tier] = field(default_factory=list)

    def tier(self, env: dict[str, str] | None = None) -> Tier:
        tier = self.make(env or FAST_JOB_ENV)
        self.made.append(tier)
        return tier


def local_harness(request, tmp_path) -> Harness:
    return Harness(make=lambda env: LocalTier(tmp_path / "work", extra_env=env))


def aml_harness(request, tmp_path) -> Harness:
    azure = request.getfixturevalue("azure")
    world = build(azure, cluster=dict(max_nodes=2, idle_s=1))
    return Harness(
        make=lambda env: world.tier(f"contract-{time.time_ns()}", job_environment=env),
        restart=azure.restart,
    )


def vm_harness(request, tmp_path) -> Harness:
    """One VM of the emulator, bootstrapped as the vm_pool role does it, reached over SSH. Its
    finished containers are removed once their end was seen, so a tier built after a restart
    has nothing to read: no restart test."""
    azure = request.getfixturevalue("azure")
    world = build_vms(azure)
    world.vm("contract-vm")
    bootstrap(world, "contract-vm")
    options = {
        "hosts": tier_hosts(world, ["contract-vm"]),
        "pool": "contract",
        "image": f"{world.login_server}/winarena:latest",
        "user": "azureuser",
        "ssh_private_key_file": key_file(world, tmp_path),
        "ssh_port": 22,
        "price_per_node_hour": None,
        "unreachable_after": 30.0,
    }

    def make(env: dict[str, str]) -> Tier:
        return vm_tier.build(
            TierContext(
                options=options,
                environment=dict(azure.env),
                run_name="contract",
                worker_script=WORKER_SCRIPT.read_text(),
                state_dir=tmp_path,
                job_environment=env,
            )
        )

    return Harness(make=make)


HARNESSES = {"local": local_harness, "aml": aml_harness, "vm": vm_harness}


def test_every_registered_tier_has_a_harness():
    assert set(registry.names()) == set(HARNESSES)


@pytest.fixture(params=registry.names())
def harness(request, tmp_path):
    made = HARNESSES[request.param](request, tmp_path)
    yield made
    for tier in made.made:
        tier.close()


def follow(
    tier: Tier, handle: str, until: Callable[[JobStatus, list[WorkerEvent]], bool], timeout=60.0
) -> tuple[JobStatus, list[WorkerEvent]]:
    """Poll the job as the engine does until ``until`` holds; the status and every event."""
    events: list[WorkerEvent] = []
    deadline = time.monotonic() + timeout
    while True:
        status = tier.status(handle)
        events += parse_lines(tier.read_new_lines(handle))
        if until(status, events):
            return status, events
        assert time.monotonic() < deadline, f"{handle}: gave up waiting in state {status.state}"
        time.sleep(0.1)


def ended(status: JobStatus, events: list[WorkerEvent]) -> bool:
    return status.state.terminal


def started(status: JobStatus, events: list[WorkerEvent]) -> bool:
    return bool(events) or status.state.terminal


def results(events: list[WorkerEvent]) -> list[str | None]:
    return [e.task_id for e in events if e.event == "task_result"]


def test_a_submitted_job_reports_every_task_then_completes(harness):
    tier = harness.tier()
    handle = tier.submit("contract-run-0001", [t for _, t in TASKS])
    assert tier.handle_for("contract-run-0001") in (None, handle)

    status, events = follow(tier, handle, ended)
    events += parse_lines(tier.read_new_lines(handle))

    assert status.state is JobState.COMPLETED
    assert results(events) == [t for _, t in TASKS]
    assert events[-1].event == "finished"
    assert status.node_started_at is not None and status.node_released_at is not None
    assert status.node_started_at <= status.node_released_at
    assert tier.describe()["tier"] == tier.name
    assert tier.price_per_node_hour >= 0


def test_a_running_job_is_cancelled_and_a_second_cancel_is_harmless(harness):
    tier = harness.tier(SLOW_ENV)
    handle = tier.submit("contract-run-0002", [t for _, t in TASKS])
    status, events = follow(tier, handle, started)
    assert not status.state.terminal, "the slow job ended before it could be cancelled"

    tier.cancel(handle)
    status, events = follow(tier, handle, ended)
    tier.cancel(handle)

    assert status.state is JobState.CANCELED
    assert results(events) == []


def test_cancelling_a_finished_job_changes_nothing(harness):
    tier = harness.tier()
    handle = tier.submit("contract-run-0003", [TASKS[0][1]])
    follow(tier, handle, ended)

    tier.cancel(handle)

    assert tier.status(handle).state is JobState.COMPLETED


def test_a_reused_job_key_is_one_job(harness):
    tier = harness.tier()
    first = tier.submit("contract-run-0004", [TASKS[0][1]])
    again = tier.submit("contract-run-0004", [TASKS[0][1]])
    assert again == first

    status, events = follow(tier, first, ended)
    events += parse_lines(tier.read_new_lines(first))

    assert status.state is JobState.COMPLETED
    assert results(events) == [TASKS[0][1]]


def test_status_after_a_restart_of_the_service(harness):
    if harness.restart is None:
        pytest.skip("the tier's jobs live in the controller's own process")
    tier = harness.tier()
    done = tier.submit("contract-run-0005", [TASKS[0][1]])
    follow(tier, done, ended)

    harness.restart()

    # The tier that submitted it and a new one (a resumed controller) both still read it.
    assert tier.status(done).state is JobState.COMPLETED
    assert harness.tier().status(done).state is JobState.COMPLETED


def test_the_failure_table_maps_to_known_codes(harness):
    tier = harness.tier()
    for vendor, canonical in tier.failure_codes.items():
        assert vendor == vendor.lower()
        assert canonical_code(canonical) == canonical and canonical != UNKNOWN
