"""The VM layer's building blocks through azure.azcollection, the way a user runs them: a
playbook makes a vnet, subnet, NSG, public IP, NIC and a VM with an SSH key (a second run
changes nothing), the ``azure.azcollection.azure_rm`` inventory plugin lists the VM with an
``ansible_host`` in 127.0.0.0/8, and paramiko reaches it there with the key."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from pathlib import Path

import paramiko
import pytest

from tests.integration.vm_setup import new_key, run, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
PLAYBOOK = Path(__file__).parent / "playbooks" / "vm_network.yml"
INVENTORY = Path(__file__).parent / "inventory" / "localazure.azure_rm.yml"
_RECAP = re.compile(
    r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


def _env(azure, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ANSIBLE_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
    )
    env.update(extra or {})
    return env


def _plain(value):
    """ansible-inventory --list marks template-unsafe strings as ``{"__ansible_unsafe": ...}``."""
    return value["__ansible_unsafe"] if isinstance(value, dict) else value


def _play(azure, public_key: str) -> subprocess.CompletedProcess:
    argv = [
        str(VENV_BIN / "ansible-playbook"),
        str(PLAYBOOK),
        "-e",
        f"localazure_port={azure.settings.port}",
        "-e",
        f"localazure_state_dir={azure.settings.state_dir}",
        "-e",
        json.dumps({"vm_network_public_key": public_key, "vm_network_ssh_source": "127.0.0.1"}),
    ]
    return subprocess.run(
        argv,
        cwd=REPO,
        env=_env(azure),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def test_playbook_inventory_and_ssh(azure):
    key, public = new_key()
    first = _play(azure, public)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    line = first.stdout.split("VM_INFO ", 1)[1].split("\n")[0].rstrip('"')
    info = json.loads(line.replace('\\"', '"'))
    assert info["tags"] == {"role": "waa-worker", "pool": "vmplay"}
    assert info["security_type"] == "Standard"

    second = _play(azure, public)
    assert second.returncode == 0, second.stdout[-4000:]
    ok, changed, unreachable, failed = map(int, _RECAP.findall(second.stdout)[-1])
    assert changed == 0, second.stdout[-6000:]

    listing = subprocess.run(
        [str(VENV_BIN / "ansible-inventory"), "-i", str(INVENTORY), "--list"],
        cwd=REPO,
        env=_env(azure, azure.env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listing.returncode == 0, listing.stderr[-3000:]
    inventory = json.loads(listing.stdout)
    hosts = inventory["waa_workers"]["hosts"]
    assert len(hosts) == 1 and inventory["pool_vmplay"]["hosts"] == hosts
    hostvars = inventory["_meta"]["hostvars"][hosts[0]]
    address = _plain(hostvars["ansible_host"])
    assert ipaddress.ip_address(address) in ipaddress.ip_network("127.0.0.0/8")
    assert _plain(hostvars["powerstate"]) == "running"

    port = next(v for v in azure.admin("GET", "compute/vms")["value"] if v["name"] == "worker1")[
        "ssh"
    ]["port"]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())

    def connect():
        try:
            client.connect(
                address,
                port=port,
                username="azureuser",
                pkey=key,
                timeout=10,
                allow_agent=False,
                look_for_keys=False,
            )
            return True
        except (OSError, paramiko.SSHException):
            return False

    wait_for(connect, "SSH on worker1")
    wait_for(lambda: run(client, "cat custom-data.txt")[1].strip() == "bootstrapped", "custom data")
    client.close()
