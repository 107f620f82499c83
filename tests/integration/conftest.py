"""A real emulator for the integration tests: started once per session on a free port with a
state directory of its own; each test starts from a reset state."""

from __future__ import annotations

import pytest

from localazure.testing import RunningEmulator


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
