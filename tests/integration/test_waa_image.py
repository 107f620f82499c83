"""The golden image layer, ``ansible-playbook playbooks/waa_image.yml``, as a user runs it (a
subprocess in the repository) against an emulator of its own: check mode creates nothing, the
first run uploads the synthetic image with Entra only (no account key), a second run uploads
nothing, an interrupted upload resumes from its staged blocks, a folder that is not a prepared
image fails before anything is created, and an image already in a container is used in place
with Storage Blob Data Reader for its readers. Everything is read back through
azure-mgmt-storage, azure-mgmt-authorization and azure-storage-blob."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.blob import BlobServiceClient

from localazure.testing import RunningEmulator

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
GOLDEN = REPO / "localazure" / "workload" / "data" / "golden_image" / "storage"
ACCOUNT, GROUP, CONTAINER = "openadaptwaaimages", "openadapt-agents", "waa-golden-image"
READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
_RECAP = re.compile(
    r"^localhost\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+\S+\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)
_FOREIGN = ("AZURE_", "LOCALAZURE_", "ARM_", "ANSIBLE_")


class Layer:
    def __init__(self, emulator: RunningEmulator, root: Path):
        self.emulator, self.root = emulator, root

    @property
    def progress_file(self) -> Path:
        return REPO / ".state" / "waa_image" / f"{ACCOUNT}.progress.jsonl"

    def play(self, source: Path | str, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_NOCOLOR="1",
        )
        argv = [
            str(VENV_BIN / "ansible-playbook"),
            "playbooks/waa_image.yml",
            "-e", f"localazure_port={self.emulator.settings.port}",
            "-e", f"localazure_state_dir={self.emulator.settings.state_dir}",
            "-e", f"eval_golden_image_source={source}",
            "-e", "waa_image_block_size_mb=1",
            *args,
        ]  # fmt: skip
        done = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        found = list(_RECAP.finditer(done.stdout))
        assert found, done.stdout[-3000:] + done.stderr[-3000:]
        return done, {k: int(v) for k, v in found[-1].groupdict().items()}

    def storage(self) -> StorageManagementClient:
        return self.emulator.mgmt_client(StorageManagementClient)

    def accounts(self) -> list[str]:
        return [a.name for a in self.storage().storage_accounts.list()]

    def container(self):
        url = f"https://{ACCOUNT}.blob.core.windows.net/"
        return BlobServiceClient(url, credential=self.emulator.credential()).get_container_client(
            CONTAINER
        )

    def assignments(self, scope: str) -> set[tuple[str, str]]:
        client = self.emulator.mgmt_client(AuthorizationManagementClient)
        return {
            (a.principal_id, a.role_definition_id.rsplit("/", 1)[-1])
            for a in client.role_assignments.list_for_scope(scope, filter="atScope()")
            if a.scope.lower() == scope.lower()
        }


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    root = tmp_path_factory.mktemp("waa_image")
    emulator = RunningEmulator(root / "localazure").start()
    saved = dict(os.environ)
    emulator.activate()
    try:
        yield Layer(emulator, root)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        emulator.stop()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _container_id(layer: Layer) -> str:
    return (
        f"/subscriptions/{layer.emulator.subscription_id}/resourceGroups/{GROUP}/providers/"
        f"Microsoft.Storage/storageAccounts/{ACCOUNT}/blobServices/default/containers/{CONTAINER}"
    )


def test_check_mode_then_one_upload_then_nothing(layer):
    layer.emulator.reset()
    layer.progress_file.unlink(missing_ok=True)
    done, recap = layer.play(GOLDEN, "--check")
    assert recap["failed"] == 0, done.stdout[-3000:]
    assert layer.accounts() == []

    done, recap = layer.play(GOLDEN)
    assert recap["failed"] == 0 and recap["changed"] > 0, done.stdout[-3000:]
    account = layer.storage().storage_accounts.get_properties(GROUP, ACCOUNT)
    assert account.allow_shared_key_access is False and account.location == "eastus"
    container = layer.container()
    blobs = {b.name: b for b in container.list_blobs(include=["metadata"])}
    local = {f"storage/{p.name}": p for p in GOLDEN.iterdir()}
    assert set(blobs) == set(local)
    for name, path in local.items():
        assert blobs[name].metadata["sha256"] == _sha256(path)
        assert blobs[name].size == path.stat().st_size
    data_img = container.get_blob_client("storage/data.img")
    assert data_img.download_blob().readall() == (GOLDEN / "data.img").read_bytes()
    assert (
        bytes(data_img.get_blob_properties().content_settings.content_md5)
        == hashlib.md5((GOLDEN / "data.img").read_bytes()).digest()
    )
    uploader = layer.assignments(_container_id(layer))
    assert {role for _, role in uploader} == {CONTRIBUTOR}
    lines = [json.loads(line) for line in layer.progress_file.read_text().splitlines()]
    assert {"file_started", "block", "file_committed"} <= {line["event"] for line in lines}
    assert "uploaded 1.5 MiB" in done.stdout

    done, recap = layer.play(GOLDEN)
    assert recap == {"changed": 0, "failed": 0}, done.stdout[-3000:]
    assert "uploaded 0.0 MiB" in done.stdout and "7 files unchanged" in done.stdout


def test_an_interrupted_upload_resumes_from_its_staged_blocks(layer, tmp_path):
    layer.emulator.reset()
    image = tmp_path / "storage"
    image.mkdir()
    disk = os.urandom(3 * 1024 * 1024 + 100)
    (image / "data.img").write_bytes(disk)
    # The first run was interrupted after two of the four blocks: what it had created exists,
    # and those two blocks are staged under the ids the module gives them.
    _create_group_and_account(layer)
    layer.storage().blob_containers.create(GROUP, ACCOUNT, CONTAINER, {})
    key = layer.storage().storage_accounts.list_keys(GROUP, ACCOUNT).keys[0].value
    blob = (
        BlobServiceClient(
            f"https://{ACCOUNT}.blob.core.windows.net/",
            credential={"account_name": ACCOUNT, "account_key": key},
        )
        .get_container_client(CONTAINER)
        .get_blob_client("storage/data.img")
    )
    sha = hashlib.sha256(disk).hexdigest()
    mib = 1024 * 1024
    for index in (0, 1):
        block_id = base64.b64encode(f"{sha[:32]}-{index:08d}".encode()).decode()
        blob.stage_block(block_id, disk[index * mib : (index + 1) * mib])

    done, recap = layer.play(image)
    assert recap["failed"] == 0, done.stdout[-3000:]
    assert "1 resumed" in done.stdout, done.stdout[-2000:]
    assert re.search(r"uploaded 1\.0 MiB", done.stdout), done.stdout[-2000:]
    assert layer.container().get_blob_client("storage/data.img").download_blob().readall() == disk


def _create_group_and_account(layer: Layer) -> None:
    layer.emulator.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
        GROUP, {"location": "eastus"}
    )
    layer.storage().storage_accounts.begin_create(
        GROUP,
        ACCOUNT,
        {"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
    ).result()


def test_a_folder_without_the_disk_fails_before_anything_is_created(layer, tmp_path):
    layer.emulator.reset()
    image = tmp_path / "storage"
    image.mkdir()
    (image / "windows.vars").write_bytes(b"vars")
    done, recap = layer.play(image)
    assert recap["failed"] == 1
    assert "is not a prepared WAA image" in done.stdout and "data.img" in done.stdout
    assert "--prepare-image" in done.stdout
    assert layer.accounts() == []
    groups = layer.emulator.mgmt_client(ResourceManagementClient).resource_groups.list()
    assert GROUP not in [g.name for g in groups]


def _create_identity(layer: Layer, name: str) -> str:
    """A user-assigned identity (a real principal of the emulator's tenant); its object id."""
    import requests

    token = layer.emulator.credential().get_token(layer.emulator.endpoint + "/.default").token
    response = requests.put(
        f"{layer.emulator.endpoint}/subscriptions/{layer.emulator.subscription_id}/resourceGroups/"
        f"{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}",
        params={"api-version": "2023-01-31"},
        json={"location": "eastus"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["properties"]["principalId"]


def test_an_image_in_a_container_is_used_in_place_and_its_readers_granted(layer):
    layer.emulator.reset()
    done, recap = layer.play(GOLDEN)
    assert recap["failed"] == 0, done.stdout[-3000:]
    reader = _create_identity(layer, "cluster-identity")
    url = f"https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/storage"
    readers = json.dumps({"eval_golden_image_readers": [{"principal_id": reader}]})
    before = layer.emulator.requests()
    done, recap = layer.play(url, "-e", readers)
    assert recap["failed"] == 0, done.stdout[-3000:]
    assert (reader, READER) in layer.assignments(_container_id(layer))
    writes = [
        r for r in layer.emulator.requests(before[-1]["seq"] if before else 0)
        if r["method"] in ("PUT", "POST") and "blob.core.windows.net" in r["host"]
    ]  # fmt: skip
    assert writes == []  # nothing uploaded

    missing = f"https://{ACCOUNT}.blob.core.windows.net/{CONTAINER}/elsewhere"
    done, recap = layer.play(missing)
    assert recap["failed"] == 1
    assert "does not hold a prepared WAA image" in done.stdout
