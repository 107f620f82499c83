"""Azure Container Instances through azure-mgmt-containerinstance 10.1.0: container groups run
their command as local processes with their Azure File mounts mapped to the share (read back
with azure-storage-file-share), secure variables, exit codes and events, restart policies,
stop/start/restart, logs with tail, image pulls with an identity (AcrPull) and billing."""

from __future__ import annotations

import time
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.fileshare import ShareServiceClient

RG = "aci"
ACCOUNT = "aciwork"
IMAGE = "mcr.microsoft.com/azurelinux/base/python:3.12"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
CREATE_TIMEOUT_S = 120


class Aci:
    def __init__(self, emulator):
        self.emulator = emulator
        emulator.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
            RG, {"location": "eastus"}
        )
        self.client = emulator.mgmt_client(ContainerInstanceManagementClient)
        self.storage = emulator.mgmt_client(StorageManagementClient)

    def share(self, name: str = "work"):
        self.storage.storage_accounts.begin_create(
            RG,
            ACCOUNT,
            {"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
        ).result()
        self.storage.file_shares.create(RG, ACCOUNT, name, {})
        key = self.storage.storage_accounts.list_keys(RG, ACCOUNT).keys[0].value
        endpoint = self.storage.storage_accounts.get_properties(RG, ACCOUNT).primary_endpoints.file
        service = ShareServiceClient(
            endpoint, credential={"account_name": ACCOUNT, "account_key": key}
        )
        return service.get_share_client(name), key

    def group(
        self, name: str, command: list[str], *, restart="Never", volumes=(), mounts=(), **extra
    ):
        container = {
            "name": name,
            "image": extra.pop("image", IMAGE),
            "command": command,
            "resources": {"requests": {"cpu": 1, "memory_in_gb": 1.5}},
            "environment_variables": extra.pop("env", []),
            "volume_mounts": list(mounts),
        }
        body = {
            "location": "eastus",
            "os_type": "Linux",
            "restart_policy": restart,
            "containers": [container],
            "volumes": list(volumes),
            **extra,
        }
        poller = self.client.container_groups.begin_create_or_update(RG, name, body)
        # Bounded: a create that never ends fails here, not at the suite's 600 s timeout.
        poller.wait(CREATE_TIMEOUT_S)
        assert poller.done(), (
            f"creating {name} did not end in {CREATE_TIMEOUT_S}s: {poller.status()}"
        )
        return poller.result()

    def wait_state(self, name: str, states: tuple[str, ...], timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            group = self.client.container_groups.get(RG, name)
            if group.instance_view and group.instance_view.state in states:
                return group
            assert time.monotonic() < deadline, f"{name} stayed {group.instance_view.state}"
            time.sleep(0.1)

    def logs(self, name: str, tail: int | None = None) -> str:
        return self.client.containers.list_logs(RG, name, name, tail=tail).content


@pytest.fixture
def aci(azure) -> Aci:
    return Aci(azure)


def test_a_file_written_into_the_mount_is_readable_from_the_share(aci):
    share, key = aci.share()
    share.create_directory("in")
    share.get_file_client("in/data.txt").upload_file(b"21")
    volume = {
        "name": "work",
        "azure_file": {
            "share_name": "work",
            "storage_account_name": ACCOUNT,
            "storage_account_key": key,
        },
    }
    script = (
        "n=$(cat /mnt/work/in/data.txt); echo reading $n; mkdir -p /mnt/work/out; "
        'python3 -c "print($n * 2)" > /mnt/work/out/answer.txt; echo secret=$TOKEN_LEN'
    )
    aci.group(
        "writer",
        ["sh", "-c", script],
        volumes=[volume],
        mounts=[{"name": "work", "mount_path": "/mnt/work"}],
        env=[{"name": "TOKEN", "secure_value": "s3cr3t-value"}],
    )
    group = aci.wait_state("writer", ("Succeeded", "Failed"))
    assert group.instance_view.state == "Succeeded"
    state = group.containers[0].instance_view.current_state
    assert (state.state, state.exit_code) == ("Terminated", 0)
    assert share.get_file_client("out/answer.txt").download_file().readall() == b"42\n"
    assert "reading 21" in aci.logs("writer")
    # The secure value is never returned; the storage key neither.
    assert group.containers[0].environment_variables[0].value is None
    assert group.containers[0].environment_variables[0].secure_value is None
    assert group.volumes[0].azure_file.storage_account_key is None
    events = [e.name for e in group.containers[0].instance_view.events]
    assert events[:3] == ["Pulling", "Pulled", "Started"]


def test_exit_code_restart_policy_and_logs_tail(aci):
    aci.group("fails", ["sh", "-c", "echo one; echo two; echo three; exit 3"])
    group = aci.wait_state("fails", ("Succeeded", "Failed"))
    assert group.instance_view.state == "Failed"
    assert group.containers[0].instance_view.current_state.exit_code == 3
    assert aci.logs("fails", tail=2) == "two\nthree\n"
    aci.group("retries", ["sh", "-c", "echo try; exit 1"], restart="OnFailure")

    def restarted() -> bool:
        view = aci.client.container_groups.get(RG, "retries").containers[0].instance_view
        return (view.restart_count or 0) >= 2

    deadline = time.monotonic() + 30
    while not restarted():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    aci.client.container_groups.stop(RG, "retries")
    assert aci.client.container_groups.get(RG, "retries").instance_view.state == "Stopped"


def test_stop_restart_and_delete_of_a_running_group(aci):
    aci.group("sleeper", ["sh", "-c", "echo up; sleep 60"])
    aci.wait_state("sleeper", ("Running",))
    aci.client.container_groups.stop(RG, "sleeper")
    group = aci.client.container_groups.get(RG, "sleeper")
    assert group.instance_view.state == "Stopped"
    assert group.containers[0].instance_view.current_state.exit_code == 137
    aci.client.container_groups.begin_restart(RG, "sleeper").result()
    group = aci.wait_state("sleeper", ("Running",))
    assert group.containers[0].instance_view.restart_count == 1
    names = [g.name for g in aci.client.container_groups.list_by_resource_group(RG)]
    assert names == ["sleeper"]
    aci.client.container_groups.begin_delete(RG, "sleeper").result()
    with pytest.raises(ResourceNotFoundError):
        aci.client.container_groups.get(RG, "sleeper")
    usage = aci.emulator.admin("GET", "containerinstance/usage")["groups"]
    [sleeper] = [g for g in usage if g["name"] == "sleeper"]
    assert not sleeper["running"] and sleeper["seconds"] > 0
    assert sleeper["cost_usd"] == pytest.approx(
        sleeper["seconds"] * (1 * 0.0000135 + 1.5 * 0.0000015), rel=1e-3
    )


def test_private_image_pulls_with_an_identity_that_has_acrpull(aci):
    emulator = aci.emulator
    registries = emulator.mgmt_client(ContainerRegistryManagementClient).registries
    registry = registries.begin_create(
        RG, "aciimages", {"location": "eastus", "sku": {"name": "Basic"}}
    ).result()
    registries.begin_import_image(
        RG,
        "aciimages",
        {
            "source": {
                "registry_uri": "mcr.microsoft.com",
                "source_image": "azurelinux/base/python:3.12",
            },
            "target_tags": ["tools/python:1"],
        },
    ).result()
    identity_id = (
        f"/subscriptions/{emulator.subscription_id}/resourceGroups/{RG}/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/puller"
    )
    identity = (
        emulator.mgmt_client(ResourceManagementClient)
        .resources.begin_create_or_update_by_id(identity_id, "2023-01-31", {"location": "eastus"})
        .result()
    )
    principal_id = identity.properties["principalId"]
    body = {
        "identity": {"type": "UserAssigned", "user_assigned_identities": {identity.id: {}}},
        "image_registry_credentials": [{"server": "aciimages.azurecr.io", "identity": identity.id}],
        "image": "aciimages.azurecr.io/tools/python:1",
    }
    with pytest.raises(HttpResponseError) as refused:
        aci.group("private", ["python3", "-c", "print('hi')"], **body)
    assert refused.value.error.code == "InaccessibleImage"
    assert "aciimages.azurecr.io/tools/python:1" in refused.value.message
    assert list(aci.client.container_groups.list_by_resource_group(RG)) == []
    emulator.mgmt_client(AuthorizationManagementClient).role_assignments.create(
        registry.id,
        str(uuid.uuid4()),
        {
            "role_definition_id": f"/subscriptions/{emulator.subscription_id}/providers/"
            f"Microsoft.Authorization/roleDefinitions/{ACR_PULL}",
            "principal_id": principal_id,
        },
    )
    aci.group("private", ["python3", "-c", "print('hi')"], **body)
    assert aci.wait_state("private", ("Succeeded", "Failed")).instance_view.state == "Succeeded"
    assert aci.logs("private") == "hi\n"


def test_a_mount_of_a_missing_share_fails_the_group(aci):
    _, key = aci.share()
    volume = {
        "name": "gone",
        "azure_file": {
            "share_name": "nope",
            "storage_account_name": ACCOUNT,
            "storage_account_key": key,
        },
    }
    with pytest.raises(HttpResponseError):
        aci.group(
            "nomount", ["true"], volumes=[volume], mounts=[{"name": "gone", "mount_path": "/data"}]
        )
    group = aci.client.container_groups.get(RG, "nomount")
    assert group.provisioning_state == "Failed"
    messages = [e.message for e in group.containers[0].instance_view.events]
    assert any("share 'nope' does not exist" in m for m in messages)
