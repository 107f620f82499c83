"""A real emulator for the integration tests: started once per session on a free port with a
state directory of its own; each test starts from a reset state."""

from __future__ import annotations

from pathlib import Path

import pytest

from localazure.testing import RunningEmulator

# The files whose tests take minutes, longest first (test durations of a CI run). The Makefile's
# xdist hands whole files to its workers in collection order (--no-loadscope-reorder, instead of
# xdist's most-tests-first): these start first, so that none of them is left to end the run
# alone on one worker while the others are idle.
LONGEST_FIRST = (
    "test_playbooks.py",
    "test_layers.py",
    "test_vm_site.py",
    "test_vm_golden_image.py",
    "test_waa_image.py",
    "test_aci_playbook.py",
    "test_aml_evaluation.py",
    "test_vm_tier.py",
    "test_playbook_bad_input.py",
    "test_batch_site.py",
    "test_auto_playbook.py",
    "test_secret_canary.py",
    "test_tier_contract.py",
    "test_batch.py",
    "test_packaging.py",
    "test_tier_fallback.py",
    "test_image_release.py",
)


def pytest_collection_modifyitems(items):
    if stale := [name for name in LONGEST_FIRST if not (Path(__file__).parent / name).is_file()]:
        raise pytest.UsageError(f"LONGEST_FIRST names files that are gone: {stale}")
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    # Stable: a file's own tests keep their order (their module fixtures rely on it).
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    running = RunningEmulator(tmp_path_factory.mktemp("localazure"))
    try:
        running.start()
        running.activate()
        yield running
    finally:
        running.stop()


@pytest.fixture
def azure(emulator):
    """The emulator, reset to an empty subscription (with its development principal)."""
    emulator.activate()
    emulator.reset()
    emulator.admin("DELETE", "faults")
    return emulator
