"""One run, one controller, through ``ansible-playbook`` as a user runs it (an evaluation on the
local tier: its workers are processes of the controller, so whether any survived can be seen).

- A SIGKILL of ansible-playbook's process group leaves nothing of the run alive: Ansible's worker
  (which runs the engine) is in a session of its own, so the engine watches its parent, and on
  its death cancels its jobs as on Ctrl-C and exits.
- A second controller on the same run refuses at once, naming the holder, and touches nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "eval_local.yml"
RUN = "waa-local"


def play(state_dir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "EVAL_REPORT"))}
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        EVAL_REPORT_DIR=str(state_dir / "reports"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            str(PLAYBOOK),
            "-e",
            f"eval_local_state_dir={state_dir}",
            *extra,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def processes_of(marker: str) -> dict[int, str]:
    """Live processes whose command line mentions ``marker`` (the run's state directory)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def running_workers(state_dir: Path) -> int:
    status = state_dir / RUN / "status.json"
    try:
        data = json.loads(status.read_text())
    except (OSError, ValueError):
        return 0
    return data["infrastructure"]["active_workers"]


def test_sigkill_of_the_playbooks_process_group_leaves_nothing_running(tmp_path):
    state_dir = tmp_path / "state"
    controller = play(state_dir, "-e", "eval_local_time_scale=2")
    try:
        wait_for(lambda: running_workers(state_dir) >= 2, 120, "two workers running")
        before = processes_of(str(state_dir))
        # ansible-playbook, its worker (the engine) and the two worker processes at least
        assert len(before) >= 4, before

        os.killpg(controller.pid, signal.SIGKILL)
        controller.wait(timeout=10)

        wait_for(lambda: not processes_of(str(state_dir)), 30, "every process of the run to end")
    finally:
        for pid in processes_of(str(state_dir)):
            os.kill(pid, signal.SIGKILL)
    with Ledger(state_dir / RUN / "ledger.sqlite3") as ledger:
        assert ledger.run_meta().status == "cancelled"
        jobs = ledger.jobs()
    assert jobs and all(job.ended_at is not None for job in jobs)
    cancelled = [job for job in jobs if job.state == "CANCELED"]
    assert cancelled and {job.failure_code for job in cancelled} == {"CancelledByEngine"}


def test_a_second_controller_on_the_same_run_refuses_at_once_and_touches_nothing(tmp_path):
    state_dir = tmp_path / "state"
    # Six tasks of about 5 s each on two workers: the first run still works while the second
    # starts up, even when a loaded machine takes 20 s to start ansible-playbook.
    first = play(state_dir, "-e", "eval_local_time_scale=2", "-e", "eval_local_max_tasks=6")
    try:
        wait_for(lambda: running_workers(state_dir) >= 1, 120, "the first run's workers")
        holder = json.loads((state_dir / RUN / "ledger.sqlite3.lock").read_text())
        with Ledger(state_dir / RUN / "ledger.sqlite3") as ledger:
            sessions = ledger.run_meta().sessions

        started = time.monotonic()
        second = play(state_dir)
        output, _ = second.communicate(timeout=120)
        seconds = time.monotonic() - started

        assert first.poll() is None, "the first run ended before the second one started"
        assert second.returncode != 0, output
        assert f"in use by another controller (pid {holder['pid']} on host" in output, output
        assert "nothing was started or cancelled" in output
        # ansible-playbook's own start-up is most of it; the engine refuses before any work
        assert seconds < 60, seconds
        with Ledger(state_dir / RUN / "ledger.sqlite3") as ledger:
            assert ledger.run_meta().sessions == sessions

        output, _ = first.communicate(timeout=300)
        assert first.returncode == 0, output
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    with Ledger(state_dir / RUN / "ledger.sqlite3") as ledger:
        assert ledger.run_meta().status == "completed"
        assert len(ledger.results()) == 6 and ledger.duplicates_ignored == 0
        assert {job.failure_code for job in ledger.jobs()} == {None}
