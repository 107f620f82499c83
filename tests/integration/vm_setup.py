"""A VM world for the Compute/Network integration tests, made through the real SDKs
(azure-mgmt-network 28, azure-mgmt-compute 33): a resource group, a registry holding the WAA
image, a user-assigned identity (with AcrPull, optionally), a virtual network and subnet, an NSG
whose inbound SSH rule admits a given source, a public IP and a NIC per VM, and VMs with an SSH
key; plus paramiko sessions to them and what the emulator's admin API reports."""

from __future__ import annotations

import base64
import io
import shlex
import time
from dataclasses import dataclass
from typing import Any

import paramiko
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.integration.aml_setup import grant_acr_pull, registry_with_waa

LOCATION = "eastus"
RG, REGISTRY, IDENTITY, VNET, SUBNET, NSG = (
    "vms",
    "vmevals",
    "vm-pull",
    "vm-net",
    "default",
    "vm-nsg",
)
ADMIN = "azureuser"
UBUNTU = {
    "publisher": "Canonical",
    "offer": "0001-com-ubuntu-server-jammy",
    "sku": "22_04-lts-gen2",
    "version": "latest",
}


def new_key_pem() -> tuple[str, str]:
    """A fresh ed25519 key: the private key in OpenSSH's format and the OpenSSH public line."""
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return pem, f"{public} test@controller"


def new_key() -> tuple[paramiko.PKey, str]:
    """A fresh ed25519 key: paramiko's private key and the OpenSSH public line."""
    pem, public = new_key_pem()
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), public


def wait_for(predicate, what: str, timeout: float = 20.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class VmWorld:
    emulator: Any
    network: NetworkManagementClient
    compute: ComputeManagementClient
    identity_id: str
    identity_principal: str
    registry_id: str
    key: paramiko.PKey
    public_key: str
    private_pem: str = ""

    @property
    def login_server(self) -> str:
        return f"{REGISTRY}.azurecr.io"

    def grant_acr_pull(self) -> None:
        grant_acr_pull(self.emulator, self.registry_id, self.identity_principal)

    def ssh_rule(self, source: str, access: str = "Allow") -> None:
        self.network.network_security_groups.begin_create_or_update(
            RG,
            NSG,
            {
                "location": LOCATION,
                "security_rules": [
                    {
                        "name": "ssh",
                        "priority": 1000,
                        "direction": "Inbound",
                        "access": access,
                        "protocol": "Tcp",
                        "source_address_prefix": source,
                        "source_port_range": "*",
                        "destination_address_prefix": "*",
                        "destination_port_range": "22",
                    }
                ],
            },
        ).result()

    def vm(
        self,
        name: str,
        *,
        size: str = "Standard_D4s_v5",
        security_type: str = "Standard",
        custom_data: str | None = None,
        delete_option: str = "Delete",
        image: dict[str, str] | None = None,
    ) -> Any:
        subnet_id = self.network.subnets.get(RG, VNET, SUBNET).id
        pip = self.network.public_ip_addresses.begin_create_or_update(
            RG,
            f"{name}-ip",
            {
                "location": LOCATION,
                "sku": {"name": "Standard"},
                "public_ip_allocation_method": "Static",
            },
        ).result()
        nic = self.network.network_interfaces.begin_create_or_update(
            RG,
            f"{name}-nic",
            {
                "location": LOCATION,
                "network_security_group": {
                    "id": self.network.network_security_groups.get(RG, NSG).id
                },
                "ip_configurations": [
                    {
                        "name": "ipconfig1",
                        "subnet": {"id": subnet_id},
                        "public_ip_address": {"id": pip.id, "delete_option": delete_option},
                    }
                ],
            },
        ).result()
        os_profile: dict[str, Any] = {
            "computer_name": name,
            "admin_username": ADMIN,
            "linux_configuration": {
                "disable_password_authentication": True,
                "ssh": {
                    "public_keys": [
                        {"path": f"/home/{ADMIN}/.ssh/authorized_keys", "key_data": self.public_key}
                    ]
                },
            },
        }
        if custom_data:
            os_profile["custom_data"] = base64.b64encode(custom_data.encode()).decode()
        return self.compute.virtual_machines.begin_create_or_update(
            RG,
            name,
            {
                "location": LOCATION,
                "tags": {"role": "waa-worker", "pool": "test"},
                "identity": {
                    "type": "UserAssigned",
                    "user_assigned_identities": {self.identity_id: {}},
                },
                "hardware_profile": {"vm_size": size},
                "security_profile": {"security_type": security_type},
                "storage_profile": {
                    "image_reference": image or UBUNTU,
                    "os_disk": {
                        "create_option": "FromImage",
                        "managed_disk": {"storage_account_type": "Premium_LRS"},
                        "delete_option": delete_option,
                    },
                },
                "os_profile": os_profile,
                "network_profile": {
                    "network_interfaces": [
                        {"id": nic.id, "primary": True, "delete_option": delete_option}
                    ]
                },
            },
        ).result()

    def running(self, names: list[str]) -> None:
        """The VMs ``names`` running and reachable over SSH: a run deallocates its pool when it
        ends (``VmTier.release_nodes``), so a pool shared by several runs is started again."""
        stopped = [name for name in names if self.power_state(name) != "running"]
        pollers = [self.compute.virtual_machines.begin_start(RG, name) for name in stopped]
        for poller in pollers:
            poller.result()
        for name in stopped:
            self.ssh_ready(name).close()

    def power_state(self, name: str) -> str:
        view = self.compute.virtual_machines.instance_view(RG, name)
        return next(s.code for s in view.statuses if s.code.startswith("PowerState/")).split("/")[1]

    def address(self, name: str) -> tuple[str, int]:
        vms = self.emulator.admin("GET", "compute/vms")["value"]
        vm = next(v for v in vms if v["name"] == name)
        return vm["ssh"]["host"], vm["ssh"]["port"]

    def connect(
        self, name: str, key: paramiko.PKey | None = None, user: str = ADMIN
    ) -> paramiko.SSHClient:
        host, port = self.address(name)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            host,
            port=port,
            username=user,
            pkey=key or self.key,
            timeout=10,
            allow_agent=False,
            look_for_keys=False,
            banner_timeout=10,
            auth_timeout=10,
        )
        return client

    def ssh_ready(self, name: str) -> paramiko.SSHClient:
        def attempt():
            try:
                return self.connect(name)
            except (OSError, EOFError, paramiko.SSHException):
                return None

        return wait_for(attempt, f"SSH on {name}")


def run(client: paramiko.SSHClient, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def docker_login_with_identity(world: VmWorld) -> str:
    """What a user runs on the VM: a token of the VM's identity, exchanged for the registry's
    refresh token, then ``docker login`` with it (``az acr login --identity`` does the same)."""
    script = f"""
import json, os, urllib.parse, urllib.request
req = urllib.request.Request(os.environ["IDENTITY_ENDPOINT"] + "?api-version=2019-08-01&resource="
    + urllib.parse.quote("{world.emulator.endpoint}"), headers={{"X-IDENTITY-HEADER": os.environ["IDENTITY_HEADER"]}})
aad = json.load(urllib.request.urlopen(req))["access_token"]
data = urllib.parse.urlencode({{"grant_type": "access_token", "service": "{world.login_server}",
    "access_token": aad}}).encode()
print(json.load(urllib.request.urlopen("https://{world.login_server}/oauth2/exchange", data))["refresh_token"])
"""
    return (
        f"python3 -c {shlex.quote(script)} | docker login {world.login_server} "
        "-u 00000000-0000-0000-0000-000000000000 --password-stdin"
    )


def build(emulator, *, acr_pull: bool = True, ssh_source: str = "127.0.0.1") -> VmWorld:
    emulator.admin("PUT", "ml/settings", {"time_scale": 0.05})
    resources = registry_with_waa(emulator, RG, REGISTRY)
    identity = resources.resources.begin_create_or_update_by_id(
        f"/subscriptions/{emulator.subscription_id}/resourceGroups/{RG}/providers"
        f"/Microsoft.ManagedIdentity/userAssignedIdentities/{IDENTITY}",
        "2023-01-31",
        {"location": LOCATION},
    ).result()
    network = emulator.mgmt_client(NetworkManagementClient)
    network.virtual_networks.begin_create_or_update(
        RG,
        VNET,
        {
            "location": LOCATION,
            "address_space": {"address_prefixes": ["10.1.0.0/16"]},
            "subnets": [{"name": SUBNET, "address_prefix": "10.1.0.0/24"}],
        },
    ).result()
    pem, public = new_key_pem()
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
    world = VmWorld(
        emulator=emulator,
        network=network,
        compute=emulator.mgmt_client(ComputeManagementClient),
        identity_id=identity.id,
        identity_principal=identity.properties["principalId"],
        registry_id=f"/subscriptions/{emulator.subscription_id}/resourceGroups/{RG}/providers"
        f"/Microsoft.ContainerRegistry/registries/{REGISTRY}",
        key=key,
        public_key=public,
        private_pem=pem,
    )
    world.ssh_rule(ssh_source)
    if acr_pull:
        world.grant_acr_pull()
    return world


def fresh_pool(emulator, names: list[str], **vm_options: Any) -> VmWorld:
    """A reset emulator with the world of ``build`` and the VMs ``names`` created in it (each
    with ``vm_options``), not yet waited for."""
    emulator.activate()
    emulator.reset()
    world = build(emulator)
    for name in names:
        world.vm(name, **vm_options)
    return world


def key_file(world: VmWorld, directory) -> str:
    """The world's private key in a 0600 file, as the VM tier reads it."""
    path = directory / "id_ed25519"
    path.write_text(world.private_pem)
    path.chmod(0o600)
    return str(path)


def bootstrap(world: VmWorld, name: str) -> None:
    """What the vm_pool role's bootstrap does on one VM: docker login with the VM's identity and
    the image pulled."""
    wait_for(lambda: world.power_state(name) == "running", f"{name} running")
    client = world.ssh_ready(name)
    try:
        code, _, err = run(client, docker_login_with_identity(world))
        assert code == 0, err
        code, _, err = run(client, f"docker pull {world.login_server}/winarena:latest")
        assert code == 0, err
    finally:
        client.close()


def tier_hosts(world: VmWorld, names: list[str]) -> list[dict[str, Any]]:
    """The VMs as the VM tier's ``hosts`` option lists them (what the azure_rm inventory gives)."""
    hosts = []
    for name in names:
        address, port = world.address(name)
        vm = world.compute.virtual_machines.get(RG, name)
        hosts.append({"name": name, "address": address, "port": port, "vm_id": vm.id})
    return hosts
