"""Import paths for the whole test suite, and no process left behind by a test.

``collections/`` holds ``ansible_collections/openadapt/azure_eval`` (a link back to the repository
root), so module_utils import by their FQCN, exactly as Ansible loads them. The repository root
makes ``localazure`` importable without installing it.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import psutil
import pytest

from localazure.testing import RunningEmulator

REPO_ROOT = Path(__file__).resolve().parents[1]

for path in (REPO_ROOT / "collections", REPO_ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


# -- no process outlives the test that started it -------------------------------------------------

_STOP_GRACE_S = 5


def _stop_tree(process: psutil.Process) -> None:
    try:
        tree = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(tree, timeout=_STOP_GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=_STOP_GRACE_S)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Processes a test started (ansible-playbook, workers, controllers, emulators) and left
    running, because it failed, timed out or forgot, are stopped with their children when the
    test ends. Processes of fixtures (set up before the test body) are their fixtures' to stop,
    and so is a fixture's emulator that the test restarted (a new process of an old owner)."""
    me = psutil.Process()
    before = {child.pid for child in me.children()}
    owners = RunningEmulator.instances()
    try:
        yield
    finally:
        kept = before | {owner.pid for owner in owners}
        for child in me.children():
            if child.pid not in kept:
                _stop_tree(child)
