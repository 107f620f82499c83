"""Bad input to ``ansible-playbook site.yml -e tier=vm``: each is refused with a clear message
before anything is created (no write request reaches the emulator). The runs go four at a time
against one emulator of this module's own."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from localazure.testing import RunningEmulator

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"

BAD_INPUT = {
    "missing key": (
        [
            "-e",
            "vm_pool_ssh_key_generate=false",
            "-e",
            "vm_pool_ssh_private_key_file=/nonexistent/key",
        ],
        "The SSH key of the pool is missing: /nonexistent/key",
    ),
    "no nested virtualization": (
        ["-e", "vm_pool_vm_size=Standard_B2s"],
        "Standard_B2s has no nested virtualization",
    ),
    "trusted launch": (
        ["-e", "vm_pool_security_type=TrustedLaunch"],
        "TrustedLaunch (and confidential VMs) turn nested virtualization off",
    ),
    "quota": (["-e", "vm_pool_size=400"], "beyond the quota"),
    "ssh from anywhere": (["-e", "vm_pool_ssh_source=*"], "lets anyone on the internet try SSH"),
    "no VMs": (["-e", "vm_pool_size=0"], "a pool needs at least one VM"),
    "golden image dir docker cannot mount": (
        ["-e", "vm_pool_golden_image_dir=/srv/waa:image"],
        "must be an absolute path or one under the admin's home",
    ),
    "golden image on a datastore only": (
        [
            "-e",
            "eval_golden_image_source=",
            "-e",
            "eval_golden_image=azureml://datastores/waa_golden_image/paths/storage",
        ],
        "which the VM tier does not read",
    ),
}


@pytest.fixture(scope="module")
def emulator_of_module(tmp_path_factory):
    running = RunningEmulator(tmp_path_factory.mktemp("vm-site")).start()
    yield running
    running.stop()


def _play(emulator: RunningEmulator, root: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AZURE_", "LOCALAZURE_", "ARM_", "ANSIBLE_"))
        and k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
    }
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        EVAL_REPORT_DIR=str(root / "reports"),
        # The local azure_rm inventory reads this emulator.
        LOCALAZURE_PORT=str(emulator.settings.port),
        LOCALAZURE_STATE_DIR=str(emulator.settings.state_dir),
    )
    argv = [
        str(VENV_BIN / "ansible-playbook"),
        "site.yml",
        "-e",
        "tier=vm",
        "-e",
        f"localazure_port={emulator.settings.port}",
        "-e",
        f"localazure_state_dir={emulator.settings.state_dir}",
        "-e",
        f"eval_state_dir={root / 'runs'}",
        "-e",
        f"vm_pool_state_dir={root / 'pool'}",
        *args,
    ]
    return subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
    )


def power_states(emulator: RunningEmulator) -> dict[str, str]:
    return {v["name"]: v["power_state"] for v in emulator.admin("GET", "compute/vms")["value"]}


def test_bad_input_is_refused_before_anything_is_created(emulator_of_module, tmp_path):
    emulator = emulator_of_module
    emulator.reset()
    with ThreadPoolExecutor(4) as pool:
        runs = dict(
            zip(
                BAD_INPUT,
                pool.map(
                    lambda item: _play(emulator, tmp_path / item[0].replace(" ", "-"), item[1][0]),
                    BAD_INPUT.items(),
                ),
                strict=True,
            )
        )
    for case, (_, message) in BAD_INPUT.items():
        run = runs[case]
        output = run.stdout + run.stderr
        assert run.returncode != 0, f"{case}: {output[-3000:]}"
        assert message in output, f"{case}: {output[-3000:]}"
        assert "Nothing was created" in output, f"{case}: {output[-3000:]}"
    writes = [
        f"{r['method']} {r['path']}"
        for r in emulator.requests()
        if r["method"] in ("PUT", "PATCH", "DELETE", "POST")
        and not r["path"].startswith("/_localazure")
        and "/oauth2/" not in r["path"]
        and not r["path"].endswith("/checkNameAvailability")
        # The azure_rm inventory reads the VMs through ARM's batch endpoint: the emulator logs
        # each request inside a batch on its own, so the envelope says nothing more.
        and r["path"] != "/batch"
    ]
    assert writes == [], writes
    assert emulator.admin("GET", "compute/vms")["value"] == []


@pytest.mark.timeout(1200)
def test_a_run_on_the_pool_then_a_second_run_that_changes_nothing(emulator_of_module, tmp_path):
    # A small pool and task set: each task once with tier vm, the report's node hours against
    # the emulator's VM time, and a second run that changes nothing and runs no task again.
    emulator = emulator_of_module
    emulator.reset()
    args = ["-e", "vm_pool_size=2", "-e", "eval_max_tasks=4"]  # eval_workers: 10
    first = _play(emulator, tmp_path, args)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-3000:]
    assert "eval_run: 4 tasks on 2 vm workers" in output, output[-3000:]  # one per VM
    vms = emulator.admin("GET", "compute/nodes")["vms"]
    report = json.loads((tmp_path / "reports" / "waa-vm.json").read_text())
    evaluation = report["evaluation"]
    assert evaluation["tasks_by_tier"] == {"vm": 4}, evaluation["tasks_by_tier"]
    with Ledger(tmp_path / "runs" / "waa-vm" / "ledger.sqlite3") as ledger:
        attempts = Counter(a.task_id for a in ledger.attempts())
        assert sorted(ledger.results()) == sorted(evaluation["tasks"])
    # Deallocated after the run: the emulator's VM time has stopped, a little after the
    # report's end.
    assert set(power_states(emulator).values()) == {"deallocated"}, power_states(emulator)
    actual = sum(v["node_seconds"] for v in vms) / 3600
    measured = evaluation["cost"]["node_hours"]
    assert len(vms) == 2 and abs(measured - actual) <= 0.10 * actual, (measured, actual)
    assert evaluation["scale_to_zero"] == {"nodes_left": {"vm": 0}, "ok": True, "waited_s": 60.0}

    before = emulator.request_seq()
    second = _play(emulator, tmp_path, args)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    recaps = re.findall(r"^\S+\s+: ok=\d+\s+changed=(\d+)", second.stdout, re.M)
    assert recaps and set(recaps) == {"0"}, output[-3000:]
    # Nothing written, and the VMs not started: with the ledger complete they stay deallocated.
    writes = [
        f"{r['method']} {r['path']}"
        for r in emulator.requests(since=before)
        if r["method"] in ("PUT", "PATCH", "DELETE", "POST")
        and not r["path"].startswith("/_localazure")
        and "/oauth2/" not in r["path"]
        and r["path"] != "/batch"
        # POST .../listKeys and the like are reads
        and not r["path"].rsplit("/", 1)[-1].startswith("list")
    ]
    assert writes == [], writes
    assert set(power_states(emulator).values()) == {"deallocated"}, power_states(emulator)
    with Ledger(tmp_path / "runs" / "waa-vm" / "ledger.sqlite3") as ledger:
        again = Counter(a.task_id for a in ledger.attempts())
    assert again == attempts
