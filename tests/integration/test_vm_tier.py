"""The VM tier through its real entry point (``eval_run`` under ``ansible-playbook``, as
playbooks/vm.yml runs it) on two emulated VMs reached over real SSH, with faults: the SSH
connection dropped mid-task, a container that never starts, a stuck worker, Ctrl-C, the
controller killed outright and run again, and a VM deleted mid-run. Each test asserts the
ledger (every task once) and the emulator's state afterwards. WAA's VM boot on this tier is in
test_vm_golden_image.py.

One pool serves the module (made once, through the real SDKs, and bootstrapped as the vm_pool
role does it); each test has its own run and state directory. The VM-deleting test comes last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError

from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from localazure.workload.task_model import list_tasks
from tests.integration.vm_setup import RG, bootstrap, fresh_pool, key_file, tier_hosts, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "eval_vm.yml"
VMS = ["vmt-1", "vmt-2"]
TASKS = [task_id for _, task_id in list_tasks()[:4]]


@pytest.fixture(scope="module")
def pool(emulator, tmp_path_factory):
    world = fresh_pool(emulator, VMS)
    for name in VMS:
        bootstrap(world, name)
    keys = tmp_path_factory.mktemp("vm-keys")
    return world, {
        "hosts": tier_hosts(world, VMS),
        "pool": "test",
        "image": f"{world.login_server}/winarena:latest",
        "ssh_private_key_file": key_file(world, keys),
        "unreachable_after": 20,
    }


@pytest.fixture(autouse=True)
def no_faults(emulator, pool):
    pool[0].running(VMS)
    yield
    emulator.admin("DELETE", "compute/faults")
    emulator.admin("DELETE", "ml/faults")


def play(emulator, state_dir: Path, tier_options: dict, **extra) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "EVAL_REPORT"))}
    env.update(emulator.env)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        EVAL_REPORT_DIR=str(state_dir / "reports"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    variables = state_dir / "vars.json"
    variables.write_text(
        json.dumps(
            {
                "eval_vm_state_dir": str(state_dir),
                "eval_vm_task_ids": TASKS,
                "eval_vm_tier_options": tier_options,
                "eval_vm_time_scale": "0.5",
                **extra,
            }
        )
    )
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            str(PLAYBOOK),
            "-e",
            f"@{variables}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(controller: subprocess.Popen[str], timeout: float = 400) -> str:
    try:
        output, _ = controller.communicate(timeout=timeout)
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
    return output


def active_workers(state_dir: Path) -> int:
    try:
        status = json.loads((state_dir / "waa-vm" / "status.json").read_text())
    except (OSError, ValueError):
        return 0
    return status["infrastructure"]["active_workers"]


def ledger_of(state_dir: Path) -> Ledger:
    return Ledger(state_dir / "waa-vm" / "ledger.sqlite3")


def assert_every_task_once(state_dir: Path) -> None:
    with ledger_of(state_dir) as ledger:
        results = ledger.results()
        assert sorted(results) == sorted(TASKS)
        assert ledger.duplicates_ignored == 0
        finals = [a for a in ledger.attempts() if a.outcome in ("success", "fail")]
        assert sorted(a.task_id for a in finals) == sorted(TASKS), finals


def containers_left(emulator) -> list[dict]:
    """Containers of the run still created or running on any VM of the pool."""
    left = []
    for vm in emulator.admin("GET", "compute/vms")["value"]:
        for c in emulator.admin("GET", f"compute/vms/{vm['name']}/containers")["value"]:
            if c["status"] in ("created", "running") and c["name"].startswith("waa-vm"):
                left.append({"vm": vm["name"], **c})
    return left


def test_ssh_dropped_mid_task_loses_no_task_and_runs_none_twice(pool, emulator, tmp_path):
    _, options = pool
    controller = play(emulator, tmp_path, options)
    wait_for(lambda: active_workers(tmp_path) >= 2, "two workers running", timeout=180)
    emulator.admin("POST", "compute/faults", {"fault": "ssh_drop", "vm": "vmt-1"})
    output = finish(controller)

    assert controller.returncode == 0, output[-3000:]
    struck = emulator.admin("GET", "compute/faults")["value"]
    assert struck and struck[0]["hit"] is not None, struck
    assert_every_task_once(tmp_path)
    with ledger_of(tmp_path) as ledger:
        assert all(job.failure_code is None for job in ledger.jobs()), ledger.jobs()
    assert containers_left(emulator) == []


def test_a_container_that_never_starts_is_replaced(pool, emulator, tmp_path):
    _, options = pool
    emulator.admin("POST", "ml/faults", {"fault": "never_starts", "job": "-0001$"})
    output = finish(play(emulator, tmp_path, options, eval_vm_startup_timeout=8))

    assert "failed=0" in output, output[-3000:]
    assert_every_task_once(tmp_path)
    with ledger_of(tmp_path) as ledger:
        codes = [job.failure_code for job in ledger.jobs() if job.failure_code]
    assert codes == ["StartupTimeout"], codes
    assert containers_left(emulator) == []


def test_a_stuck_worker_is_cancelled_and_its_task_rerun(pool, emulator, tmp_path):
    _, options = pool
    emulator.admin("POST", "ml/faults", {"fault": "stuck", "job": "-0001$"})
    output = finish(play(emulator, tmp_path, options, eval_vm_stuck_after=6))

    assert "failed=0" in output, output[-3000:]
    assert_every_task_once(tmp_path)
    with ledger_of(tmp_path) as ledger:
        codes = [job.failure_code for job in ledger.jobs() if job.failure_code]
    assert codes == ["Stuck"], codes
    assert containers_left(emulator) == []


def test_a_vm_over_95_percent_cpu_raises_node_unhealthy_and_its_job_moves(pool, emulator, tmp_path):
    # The engine reads the VMs' host metrics from Azure Monitor (one query for the pool) every
    # second; the faulted job's VM is at 99% CPU from its start, unhealthy after 2 s of it.
    _, options = pool
    emulator.admin(
        "POST", "ml/faults", {"fault": "overload", "metric": "cpu", "job": "-0001$", "after_s": 0}
    )
    requests_before = emulator.request_seq()
    output = finish(
        play(
            emulator,
            tmp_path,
            options,
            eval_vm_time_scale="2",
            eval_vm_metrics_interval=1,
            eval_vm_alert_thresholds={"node_unhealthy_for": 2},
        )
    )

    assert "failed=0" in output, output[-3000:]
    assert_every_task_once(tmp_path)
    with ledger_of(tmp_path) as ledger:
        codes = {job.job_key[-4:]: job.failure_code for job in ledger.jobs() if job.failure_code}
    assert codes == {"0001": "NodeUnhealthy"}, codes
    status = json.loads((tmp_path / "waa-vm" / "status.json").read_text())
    unhealthy = [a for a in status["alerts"]["history"] if a["rule"] == "compute_node_unhealthy"]
    assert len(unhealthy) == 1, status["alerts"]
    assert "/virtualMachines/vmt-" in unhealthy[0]["subject"] and "cpu" in unhealthy[0]["message"]
    reads = [
        r
        for r in emulator.requests(since=requests_before)
        if r["path"].endswith("/providers/Microsoft.Insights/metrics")
    ]
    # one multi-resource query per read, at the subscription's scope
    assert reads and {r["path"].split("/")[3] for r in reads} == {"providers"}, reads
    assert containers_left(emulator) == []


def test_ctrl_c_leaves_no_container_running_on_any_vm(pool, emulator, tmp_path):
    world, options = pool
    controller = play(emulator, tmp_path, options, eval_vm_time_scale="5")
    wait_for(lambda: active_workers(tmp_path) >= 2, "two workers running", timeout=180)
    assert len(containers_left(emulator)) == 2

    os.killpg(controller.pid, signal.SIGINT)
    output = finish(controller, timeout=120)

    assert controller.returncode != 0
    assert "interrupted" in output, output[-3000:]
    with ledger_of(tmp_path) as ledger:
        assert ledger.run_meta().status == "cancelled"
        assert {job.failure_code for job in ledger.jobs()} == {"CancelledByEngine"}
    assert containers_left(emulator) == []
    # However the run ended, its VMs are given back.
    assert {world.power_state(name) for name in VMS} == {"deallocated"}


def test_controller_killed_outright_then_run_again_runs_every_task_once(pool, emulator, tmp_path):
    _, options = pool
    controller = play(emulator, tmp_path, options, eval_vm_time_scale="1")
    wait_for(lambda: active_workers(tmp_path) >= 2, "two workers running", timeout=180)
    # Every process of the run, the engine (Ansible's worker, in a session of its own) included:
    # nothing is left to cancel the containers, which run on.
    os.killpg(controller.pid, signal.SIGKILL)
    for pid in _processes_of(str(tmp_path)):
        os.kill(pid, signal.SIGKILL)
    controller.wait(timeout=30)
    # One per VM (a container that ended just before the kill leaves the list at the VM's
    # next tick; a copy started behind a failed SSH call would stay).
    wait_for(lambda: len(containers_left(emulator)) == 2, "one container per VM", timeout=30)

    output = finish(play(emulator, tmp_path, options, eval_vm_time_scale="1"))

    assert "failed=0" in output, output[-3000:]
    assert "adopted job" in output or "left by an earlier controller" in output, output[-3000:]
    assert_every_task_once(tmp_path)
    with ledger_of(tmp_path) as ledger:
        assert ledger.run_meta().sessions == 2
    assert containers_left(emulator) == []


def test_a_vm_deleted_mid_run_has_its_tasks_rerun_elsewhere(pool, emulator, tmp_path):
    world, options = pool
    controller = play(emulator, tmp_path, options)
    wait_for(lambda: active_workers(tmp_path) >= 2, "two workers running", timeout=180)
    emulator.admin("POST", "compute/faults", {"fault": "delete", "vm": "vmt-1"})
    output = finish(controller)

    assert controller.returncode == 0, output[-3000:]
    assert_every_task_once(tmp_path)
    with ledger_of(tmp_path) as ledger:
        lost = [job for job in ledger.jobs() if job.failure_code]
    assert lost and all("vmt-1" in (job.reason or "") for job in lost), lost
    assert {job.failure_code for job in lost} == {"NodePreempted"}
    with pytest.raises(ResourceNotFoundError):
        world.compute.virtual_machines.get(RG, "vmt-1")
    assert containers_left(emulator) == []


def _processes_of(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
