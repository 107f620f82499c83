"""azcollection's Batch modules (``azure_rm_batchaccount``, ``azure_rm_batchaccountpool``) in a
playbook against the emulator, read back with azure-mgmt-batch; a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from azure.mgmt.batch import BatchManagementClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "batch_account_pool.yml"


def play(emulator, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "LOCALAZURE_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        EVAL_REPORT_DIR=str(tmp_path / "reports"),
    )
    return subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            str(PLAYBOOK),
            "-e",
            f"localazure_port={emulator.settings.port}",
            "-e",
            f"localazure_state_dir={emulator.settings.state_dir}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def test_azcollection_batch_modules_create_the_account_and_container_pool(azure, tmp_path):
    first = play(azure, tmp_path)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    mgmt = azure.mgmt_client(BatchManagementClient)
    account = mgmt.batch_account.get("batchplay", "waaplay")
    assert account.account_endpoint == "waaplay.eastus.batch.azure.com"
    assert account.auto_storage.storage_account_id.endswith("/storageAccounts/waaplaystorage")
    pool = mgmt.pool.get("batchplay", "waaplay", "waa")
    vm = pool.deployment_configuration.virtual_machine_configuration
    assert vm.security_profile.security_type == "standard"
    assert vm.container_configuration.container_image_names == [
        "docker.io/windowsarena/winarena:latest"
    ]
    assert pool.scale_settings.fixed_scale.target_dedicated_nodes == 1
    second = play(azure, tmp_path)
    assert second.returncode == 0, second.stdout[-4000:]
    changed = [
        block.splitlines()[0]
        for block in second.stdout.split("TASK [")
        if "\nchanged: [localhost]" in block
    ]
    assert changed == [], second.stdout[-3000:]
