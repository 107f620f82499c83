"""The worker's boot phases on the emulator's stand-in VM (localazure.workload.waa_vm): the
golden image check, the VM start, the probe loop, the failures its output explains, and the one
restart of a VM that stops answering."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.worker_events import (
    parse_lines,
)
from localazure.workload import task_model
from localazure.workload.waa_vm import ISO_MISSING

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = REPO_ROOT / "worker" / "waa_worker.py"
GOLDEN_IMAGE = REPO_ROOT / "localazure" / "workload" / "data" / "golden_image" / "storage"
PYTHON = shlex.quote(sys.executable)


def run_worker(tmp_path, task_ids, image=GOLDEN_IMAGE, timeout=60, extra_args=(), **env):
    address = "127.{}.{}.{}".format(*(1 + secrets.randbelow(254) for _ in range(3)))
    environ = dict(
        os.environ,
        PYTHONPATH=str(REPO_ROOT),
        WAA_CLIENT_CMD=f"{PYTHON} -m localazure.workload.waa_standin",
        WAA_CLIENT_BATCH="1",
        WAA_STANDIN_TIME_SCALE="0.003",
        WAA_VM_START_CMD=f"{PYTHON} -m localazure.workload.waa_vm",
        WAA_STANDIN_VM_LISTEN=f"{address}:5000",
        WAA_PROBE_URL=f"http://{address}:5000/probe",
        WAA_PROBE_INTERVAL="0.1",
        WAA_STANDIN_VM_BOOT_S="0.3",
        WAA_STORAGE_LINK="",
        TMPDIR=str(tmp_path),
    )
    environ.pop("WAA_VM_BOOT", None)
    environ.update(env)
    argv = [
        sys.executable,
        str(WORKER),
        "--worker-id",
        "w-1",
        "--task-ids",
        ",".join(task_ids),
        "--test-all-meta",
        str(task_model.SYNTHETIC_TEST_ALL),
        "--result-dir",
        str(tmp_path / "results"),
        "--heartbeat-interval",
        "0.1",
        "--golden-image-path",
        str(image),
        *extra_args,
    ]
    done = subprocess.run(
        argv, env=environ, capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )
    return done, parse_lines(done.stdout.splitlines())


def names(events):
    return [e.event for e in events if e.event != "heartbeat"]


def tasks(n, start=30):
    return [task_id for _, task_id in task_model.list_tasks()[start : start + n]]


def test_the_vm_boots_before_the_first_task_with_heartbeats_through_the_boot(tmp_path):
    done, events = run_worker(tmp_path, tasks(2))
    assert done.returncode == 0, done.stderr
    assert names(events)[:4] == ["started", "image_ready", "vm_starting", "vm_ready"]
    assert names(events)[4:] == ["task_started", "task_result"] * 2 + ["finished"]
    image = next(e for e in events if e.event == "image_ready")
    assert image.get("path") == str(GOLDEN_IMAGE) and "data.img" in image.get("files")
    ready = next(e for e in events if e.event == "vm_ready")
    assert ready.get("attempt") == 1 and ready.get("boot_s") >= 0.3
    booting = [e for e in events if e.event == "heartbeat" and e.get("phase") == "vm_starting"]
    assert booting, "heartbeats go on while the VM boots"
    # WAA's own line, each time the probe does not answer yet.
    assert "Waiting for a response from the windows server" in done.stderr


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated"])
def test_a_missing_or_truncated_golden_image_fails_before_the_vm_starts(tmp_path, damage):
    image = tmp_path / "storage"
    shutil.copytree(GOLDEN_IMAGE, image)
    disk = image / "data.img"
    if damage == "missing":
        disk.unlink()
    elif damage == "empty":
        disk.write_bytes(b"")
    else:
        disk.write_bytes(disk.read_bytes()[:1000])
    done, events = run_worker(tmp_path, tasks(1), image=image)
    assert done.returncode == 4
    assert names(events) == ["started", "failed"]
    failed = events[-1]
    assert failed.get("code") == "GoldenImageMissing"
    assert "playbooks/waa_image.yml" in failed.get("message")


def test_boot_output_saying_the_iso_is_missing_ends_the_boot_at_once(tmp_path):
    # The worker's check passes, but the VM looks elsewhere (dockur's /storage) and loops on
    # its message, as the seed's post-mortem container did for 31 minutes.
    elsewhere = tmp_path / "nothing-here"
    vm = f"env WAA_GOLDEN_IMAGE_PATH={elsewhere} {PYTHON} -m localazure.workload.waa_vm"
    done, events = run_worker(tmp_path, tasks(1), WAA_VM_START_CMD=vm, timeout=30)
    assert done.returncode == 4
    failed = events[-1]
    assert failed.event == "failed" and failed.get("code") == "GoldenImageMissing"
    assert ISO_MISSING in failed.get("boot_output")
    assert "vm_ready" not in names(events)


def test_no_kvm_fails_as_qemu_does_with_the_nested_virtualization_fix(tmp_path):
    done, events = run_worker(
        tmp_path, tasks(1), WAA_STANDIN_KVM="VM size Standard_D2as_v5 has no nested virtualization"
    )
    assert done.returncode == 4
    failed = events[-1]
    assert failed.get("code") == "NestedVirtualizationUnavailable"
    assert "security type Standard" in failed.get("message")
    assert any("failed to initialize kvm" in line for line in failed.get("boot_output"))


def test_a_vm_hanging_at_boot_is_given_up_at_the_workers_boot_limit(tmp_path):
    done, events = run_worker(
        tmp_path, tasks(1), WAA_STANDIN_VM_FAULT="boot_hang", WAA_VM_BOOT_TIMEOUT="1"
    )
    assert done.returncode == 4
    assert names(events) == ["started", "image_ready", "vm_starting", "failed"]
    assert events[-1].get("code") == "VmBootTimeout"


def test_a_vm_that_stops_answering_mid_run_is_restarted_once_and_the_tasks_finish(tmp_path):
    ids = tasks(4)
    done, events = run_worker(
        tmp_path,
        ids,
        WAA_STANDIN_VM_FAULT="probe_stops",
        WAA_STANDIN_VM_FAULT_AFTER_S="1",
        WAA_STANDIN_TIME_SCALE="0.1",  # tasks of about a second: the VM goes away mid-run
    )
    assert done.returncode == 0, done.stderr
    seen = names(events)
    assert seen.count("vm_lost") == 1 and seen.count("vm_ready") == 2
    assert seen.index("vm_lost") > seen.index("task_started")
    results = [e for e in events if e.event == "task_result"]
    assert sorted(e.task_id for e in results) == sorted(ids)
    assert all(e.get("status") != "error" for e in results)
    assert (tmp_path / "waa-standin-vm" / "boots").read_text() == "2"


def test_a_vm_whose_restart_fails_gives_the_job_up_naming_the_task_in_flight(tmp_path):
    done, events = run_worker(
        tmp_path,
        tasks(4),
        WAA_STANDIN_VM_FAULT="restart_fails",
        WAA_STANDIN_VM_FAULT_AFTER_S="1",
        WAA_STANDIN_TIME_SCALE="0.1",
        # Long enough for the first boot on a loaded machine; the second never answers.
        WAA_VM_BOOT_TIMEOUT="8",
    )
    assert done.returncode == 4
    failed = events[-1]
    assert failed.event == "failed" and failed.get("code") == "VmUnresponsive"
    lost = next(e for e in events if e.event == "vm_lost")
    assert failed.get("task_id") == lost.task_id is not None


def test_the_boot_can_be_left_to_the_images_entry_point(tmp_path):
    done, events = run_worker(tmp_path, tasks(1), image=tmp_path / "absent", WAA_VM_BOOT="0")
    assert done.returncode == 0
    assert names(events) == ["started", "task_started", "task_result", "finished"]


def test_a_warm_up_checks_the_golden_image_names_its_node_and_runs_no_task(tmp_path):
    done, events = run_worker(tmp_path, [], extra_args=["--warm-up"], AZ_BATCH_NODE_ID="tvm-1")
    assert done.returncode == 0, done.stderr
    assert names(events) == ["started", "image_ready", "warm_up", "finished"]
    assert events[-2].get("node") == "tvm-1"
    done, events = run_worker(tmp_path, [], image=tmp_path / "absent", extra_args=["--warm-up"])
    assert done.returncode == 4
    assert names(events) == ["started", "failed"] and events[-1].get("code") == "GoldenImageMissing"
