"""WAA's golden image on the VM tier (issue 9 on the VMs of issue 10), through the real entry
points: the golden image layer, the reader grant and role vm_pool's bootstrap under
``ansible-playbook`` over SSH (tests/integration/playbooks/vm_golden_image.yml, what
playbooks/vm.yml does around the pool), then ``eval_run`` on the VM tier with the image mounted
read-only into every worker's container.

- The bootstrap copies the image onto each VM's disk with the VM's managed identity; a second
  bootstrap downloads nothing.
- Every job's log shows image_ready, vm_starting, vm_ready before its first task; every task is
  in the ledger once; the report has the boot time per job.
- A VM hanging at boot is caught within the boot limit plus a poll; its tasks run elsewhere.
- An image directory the VMs do not have stops the run at the first jobs, naming the upload step.
- An identity without Storage Blob Data Reader fails the bootstrap with that fix.
- The emulated VMs' ``docker run -v`` maps a path to itself only, and ``inspect`` shows it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from azure.mgmt.authorization import AuthorizationManagementClient

from localazure.workload.task_model import list_tasks
from tests.integration.playbook_runner import Playground, Run
from tests.integration.test_vm_tier import finish, ledger_of, play
from tests.integration.vm_setup import fresh_pool, key_file, run, tier_hosts, wait_for

# Two bootstraps of two VMs over SSH and an evaluation: 2 minutes alone, 10 on a loaded CI machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "vm_golden_image.yml"
GOLDEN = REPO / "localazure" / "workload" / "data" / "golden_image" / "storage"
VMS = ["vmg-1", "vmg-2"]
TASKS = [task_id for _, task_id in list_tasks()[:4]]
EVENT_PREFIX = "WAA_EVENT "
BOOT_PHASES = ["started", "image_ready", "vm_starting", "vm_ready"]
MANIFEST = ".golden-image-manifest.json"
FIRST_BOOT = '#!/bin/bash\ntouch "$HOME/.vm_pool_first_boot_done"\n'
_COPY_TASK = re.compile(r"TASK \[.*Copy the golden image onto the VM's disk.*?\n(.*?)\n\n", re.S)


@pytest.fixture(scope="module")
def pool(emulator, tmp_path_factory):
    world = fresh_pool(emulator, VMS, custom_data=FIRST_BOOT)
    for name in VMS:
        wait_for(lambda n=name: world.power_state(n) == "running", f"{name} running")
        world.ssh_ready(name).close()
    root = tmp_path_factory.mktemp("vm-golden")
    key = key_file(world, root)
    hosts = tier_hosts(world, VMS)
    inventory = root / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    # What inventories/local/group_vars/all gives the layers on the emulator.
                    "vars": {"azure_use_emulator": True, "azure_environment": {}, "azure_auth": {}},
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    },
                    "children": {
                        "vm_golden": {
                            "hosts": {
                                h["name"]: {
                                    "ansible_host": h["address"],
                                    "ansible_port": h["port"],
                                    "ansible_user": "azureuser",
                                    "ansible_ssh_private_key_file": key,
                                    "ansible_python_interpreter": "python3",
                                    "ansible_remote_tmp": f"/tmp/.ansible-vm-golden-{h['name']}",
                                }
                                for h in hosts
                            }
                        }
                    },
                }
            }
        )
    )
    options = {
        "hosts": hosts,
        "pool": "test",
        "image": f"{world.login_server}/winarena:latest",
        "ssh_private_key_file": key,
        "unreachable_after": 20,
    }
    return world, inventory, options


@pytest.fixture(autouse=True)
def pool_running(pool):
    pool[0].running(VMS)


def bootstrap(emulator, world, inventory: Path, root: Path, **extra) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    variables = root / "bootstrap.json"
    variables.write_text(
        json.dumps(
            {
                "eval_golden_image_source": str(GOLDEN),
                "waa_image_block_size_mb": 1,
                "waa_image_progress_file": str(root / "upload.progress.jsonl"),
                "vm_golden_reader_principal_ids": [world.identity_principal],
                "vm_pool_login_server": world.login_server,
                "vm_pool_image": f"{world.login_server}/winarena:latest",
                **extra,
            }
        )
    )
    return Playground(emulator, root).play(
        "-i", str(inventory), "-e", f"@{variables}", playbook=PLAYBOOK, timeout=900
    )


def copy_results(output: str) -> dict[str, str]:
    """Each VM's status line of the copy task (``changed: [vmg-1]``, ``ok: [vmg-2]``)."""
    found = _COPY_TASK.search(output)
    assert found, output[-4000:]
    return dict(
        (m.group(2), m.group(1)) for m in re.finditer(r"^(\w+): \[([\w-]+)\]", found.group(1), re.M)
    )


def vm_home(world, name: str) -> Path:
    """The admin's home on the VM (on the emulator, a directory of the VM's disk)."""
    client = world.connect(name)
    try:
        return Path(run(client, "printenv HOME")[1].strip())
    finally:
        client.close()


def worker_logs(emulator) -> dict[str, list[dict]]:
    """Every worker's events by job key, from the container logs on the VMs' disks."""
    logs: dict[str, list[dict]] = {}
    disks = emulator.settings.state_dir / "compute" / "disks"
    for path in disks.glob("*/var/lib/docker/containers/*/*-json.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(EVENT_PREFIX):
                event = json.loads(line[len(EVENT_PREFIX) :])
                if event["event"] != "heartbeat":
                    logs.setdefault(event["worker"], []).append(event)
    return logs


def blob_downloads(emulator, since: int, principal: str) -> list[dict]:
    """Blob reads (not listings) by ``principal`` since request ``since``."""
    return [
        r
        for r in emulator.requests(since)
        if r["method"] == "GET"
        and r["host"].endswith(".blob.core.windows.net")
        and r["principal"] == principal
        and "comp=" not in (r.get("query") or "")
    ]


def test_the_image_reaches_every_vm_once_and_every_job_boots_from_it(pool, emulator, tmp_path):
    world, inventory, options = pool
    start = emulator.request_seq()
    first = bootstrap(emulator, world, inventory, tmp_path / "first")
    assert first.returncode == 0, first.tail()
    assert copy_results(first.stdout) == {name: "changed" for name in VMS}
    for name in VMS:
        copied = vm_home(world, name) / "waa-storage"
        for source in GOLDEN.iterdir():
            assert (copied / source.name).read_bytes() == source.read_bytes(), source.name
        manifest = json.loads((copied / MANIFEST).read_text())
        assert set(manifest["files"]) == {p.name for p in GOLDEN.iterdir()}
        assert not list(copied.glob(".*.part"))

    # Each VM read each file once (an empty one needs no read).
    files = [p for p in GOLDEN.iterdir() if p.stat().st_size]
    assert len(blob_downloads(emulator, start, world.identity_principal)) == len(VMS) * len(files)
    mark = emulator.request_seq()
    second = bootstrap(emulator, world, inventory, tmp_path / "second")
    assert second.returncode == 0, second.tail()
    assert copy_results(second.stdout) == {name: "ok" for name in VMS}
    assert blob_downloads(emulator, mark, world.identity_principal) == []

    homes = {str(vm_home(world, name)) for name in VMS}  # read now: the run deallocates the VMs
    state = tmp_path / "run"
    output = finish(play(emulator, state, {**options, "golden_image_dir": "~/waa-storage"}))

    assert "failed=0" in output, output[-4000:]
    with ledger_of(state) as ledger:
        assert sorted(ledger.results()) == sorted(TASKS)
        assert ledger.duplicates_ignored == 0
        jobs = [job.job_key for job in ledger.jobs()]
    logs = worker_logs(emulator)
    for job_key in jobs:
        events = logs[job_key]
        assert [e["event"] for e in events[:4]] == BOOT_PHASES, events[:5]
        assert events[4]["event"] == "task_started", events[:6]
        image = events[1]
        assert image["path"] in {f"{home}/waa-storage" for home in homes}, image
        assert "data.img" in image["files"]
    report = json.loads((state / "waa-vm" / "result.json").read_text())
    boot = report["boot"]
    assert set(boot["jobs"]) == set(jobs)
    assert all(j["ready"] and j["boot_s"] is not None for j in boot["jobs"].values()), boot


def test_a_vm_hanging_at_boot_is_caught_within_the_boot_limit_and_its_tasks_run_elsewhere(
    pool, emulator, tmp_path
):
    world, inventory, options = pool
    if not all((vm_home(world, n) / "waa-storage" / MANIFEST).exists() for n in VMS):
        assert bootstrap(emulator, world, inventory, tmp_path / "bootstrap").returncode == 0
    emulator.admin("POST", "ml/faults", {"fault": "boot_hang", "job": "-0001$"})
    limit = 8
    try:
        output = finish(
            play(
                emulator,
                tmp_path / "run",
                {**options, "golden_image_dir": "~/waa-storage"},
                eval_vm_boot_timeout=limit,
            )
        )
    finally:
        emulator.admin("DELETE", "ml/faults")

    assert "failed=0" in output, output[-4000:]
    with ledger_of(tmp_path / "run") as ledger:
        assert sorted(ledger.results()) == sorted(TASKS)
        [retry] = ledger.retries()
        results = ledger.results()
    assert retry["code"] == "VmBootTimeout", retry
    # eval_run gives the worker the same limit: whichever of the two speaks first, the boot is
    # given up at the limit (plus one poll, and what a loaded machine adds to reading it).
    waited = re.search(r"(\d+)s after vm_starting|within (\d+)s of the VM's start", retry["reason"])
    assert waited, retry["reason"]
    assert limit <= int(waited.group(1) or waited.group(2)) <= limit + 3, retry["reason"]
    requeued = retry["requeued_task_ids"]
    assert requeued and all(results[t].job_key != retry["job_key"] for t in requeued)


def test_an_image_the_vms_do_not_have_stops_at_the_first_jobs_naming_the_upload_step(
    pool, emulator, tmp_path
):
    _, _, options = pool
    tasks = [task_id for _, task_id in list_tasks()[:8]]
    output = finish(
        play(
            emulator,
            tmp_path,
            {**options, "golden_image_dir": "~/never-copied"},
            eval_vm_task_ids=tasks,
        )
    )

    assert "failed=1" in output, output[-4000:]
    assert "GoldenImageMissing" in output and "playbooks/waa_image.yml" in output, output[-4000:]
    with ledger_of(tmp_path) as ledger:
        assert ledger.results() == {}
        started = [job for job in ledger.jobs() if job.failure_code]
    # The first round only (one job per VM), not every job of the run.
    assert 1 <= len(started) <= len(VMS), started


def test_docker_run_mounts_a_path_onto_itself_only(pool, emulator):
    world, _, _ = pool
    client = world.connect(VMS[0])
    try:
        image = f"{world.login_server}/winarena:latest"
        code, _, err = run(
            client,
            'd="$HOME/waa-storage"; docker run -d --name mount-check -v "$d:$d:ro" '
            f"{image} bash -c 'ls \"$HOME\"'",
        )
        assert code == 0, err
        code, out, _ = run(client, "docker inspect mount-check")
        [view] = json.loads(out)
        home = str(vm_home(world, VMS[0]))
        assert view["Mounts"] == [
            {
                "Type": "bind",
                "Source": f"{home}/waa-storage",
                "Destination": f"{home}/waa-storage",
                "Mode": "ro",
                "RW": False,
                "Propagation": "rprivate",
            }
        ]
        assert view["HostConfig"]["Binds"] == [f"{home}/waa-storage:{home}/waa-storage:ro"]
        code, _, err = run(client, f"docker run --rm -v /srv/image:/storage:ro {image} true")
        assert code == 125 and "can only map a path to itself" in err, err
        run(client, "docker rm -f mount-check")
    finally:
        client.close()


def test_an_identity_without_the_reader_role_fails_the_bootstrap_with_the_fix(
    pool, emulator, tmp_path
):
    world, inventory, _ = pool
    auth = emulator.mgmt_client(AuthorizationManagementClient)
    for assignment in auth.role_assignments.list_for_subscription():
        if assignment.principal_id == world.identity_principal and "storageAccounts" in (
            assignment.scope or ""
        ):
            auth.role_assignments.delete_by_id(assignment.id)

    done = bootstrap(
        emulator,
        world,
        inventory,
        tmp_path,
        vm_golden_reader_principal_ids=[],
        vm_pool_golden_image_dir="~/waa-storage-unread",
        vm_pool_golden_image_permission_wait_s=1,
    )

    output = done.output
    assert done.returncode != 0, output[-4000:]
    assert "Storage Blob Data Reader" in output, output[-4000:]
    assert "may not read the golden image" in output, output[-4000:]
    for name in VMS:
        assert not (vm_home(world, name) / "waa-storage-unread" / "data.img").exists()
