"""``ansible-playbook playbooks/aci_run.yml`` on the emulator: the output streamed, the file the
container wrote readable through azure-storage-file-share, the cost printed, and no container
group left behind (read back with azure-mgmt-containerinstance), whatever the ending: success,
a failing container, Ctrl-C, an image the identity may not pull, a mount of a missing share."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.fileshare import ShareServiceClient

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "aci_run.yml"
RG = "aci-play"
ACCOUNT = "aciplaywork"
SECRET = "canary-7d1f0c9a-secret"


def _command(emulator, tmp_path: Path, *extra: str) -> list[str]:
    return [
        str(REPO / ".venv" / "bin" / "ansible-playbook"),
        str(PLAYBOOK),
        "-e",
        f"localazure_port={emulator.settings.port}",
        "-e",
        f"localazure_state_dir={emulator.settings.state_dir}",
        "-e",
        f"aci_resource_group={RG}",
        "-e",
        f"aci_storage_account={ACCOUNT}",
        "-e",
        f"aci_download_to={tmp_path / 'out'}",
        "-e",
        "aci_poll_interval=0.3",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "LOCALAZURE_"))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return env


def play(emulator, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(emulator, tmp_path, *extra),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def groups(emulator) -> list[str]:
    client = emulator.mgmt_client(ContainerInstanceManagementClient)
    return [g.name for g in client.container_groups.list()]


def share_client(emulator):
    storage = emulator.mgmt_client(StorageManagementClient)
    key = storage.storage_accounts.list_keys(RG, ACCOUNT).keys[0].value
    endpoint = storage.storage_accounts.get_properties(RG, ACCOUNT).primary_endpoints.file
    service = ShareServiceClient(endpoint, credential={"account_name": ACCOUNT, "account_key": key})
    return service.get_share_client("work")


@pytest.fixture
def work_share(azure):
    """The work share, made beforehand (the runs then use aci_share_create=false)."""
    azure.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
        RG, {"location": "eastus"}
    )
    storage = azure.mgmt_client(StorageManagementClient)
    storage.storage_accounts.begin_create(
        RG, ACCOUNT, {"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
    ).result()
    storage.file_shares.create(RG, ACCOUNT, "work", {})
    return azure


def test_a_run_streams_its_output_leaves_its_file_and_no_group(azure, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "main.py").write_text("import os\nprint('answer', 6 * 7, len(os.environ['TOKEN']))\n")
    command = "python3 main.py && echo written > $ACI_OUTPUT_DIR/result.txt && echo $TOKEN"
    run = play(
        azure,
        tmp_path,
        "-e",
        f"aci_upload={code}",
        "-e",
        "aci_name=demo",
        "-e",
        f"aci_command='{command}'",
        "-e",
        f'{{"aci_secure_environment": {{"TOKEN": "{SECRET}"}}}}',
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"[demo] answer 42 {len(SECRET)}" in run.stdout
    assert "[demo] ********" in run.stdout
    assert SECRET not in run.stdout + run.stderr
    assert "exit code 0" in run.stdout and "cost USD" in run.stdout
    assert share_client(azure).get_file_client("out/result.txt").download_file().readall() == (
        b"written\n"
    )
    assert (tmp_path / "out" / "result.txt").read_text() == "written\n"
    assert groups(azure) == []
    [usage] = azure.admin("GET", "containerinstance/usage")["groups"]
    assert usage["name"] == "demo" and not usage["running"] and usage["cost_usd"] > 0


def test_a_failing_container_fails_the_play_with_its_exit_code(work_share, tmp_path):
    run = play(
        work_share,
        tmp_path,
        "-e",
        "aci_share_create=false",
        "-e",
        "aci_name=broken",
        "-e",
        "aci_command='echo about to fail; exit 7'",
    )
    assert run.returncode != 0
    assert "[broken] about to fail" in run.stdout
    assert "container broken exited with code 7" in run.stdout
    assert groups(work_share) == []


def test_ctrl_c_mid_run_deletes_the_group(work_share, tmp_path):
    log = tmp_path / "play.out"
    with log.open("w") as out:
        controller = subprocess.Popen(
            _command(
                work_share,
                tmp_path,
                "-e",
                "aci_share_create=false",
                "-e",
                "aci_name=sleeper",
                "-e",
                "aci_command='echo started; sleep 300'",
            ),
            cwd=REPO,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 600
        while "[sleeper] started" not in log.read_text():
            assert controller.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the container did not start in time"
            time.sleep(0.2)
        assert groups(work_share) == ["sleeper"]
        os.killpg(controller.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        assert controller.wait(120) != 0
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
    # ansible-playbook may exit before its worker has deleted the group: wait for it.
    deadline = time.monotonic() + 120
    while groups(work_share):
        assert time.monotonic() < deadline, "the interrupted run left its container group"
        time.sleep(0.5)
    deletes = [r for r in work_share.requests() if r["method"] == "DELETE"]
    assert any(r["path"].endswith("/containerGroups/sleeper") for r in deletes)


def test_an_image_the_identity_may_not_pull_fails_clearly_leaving_no_group(work_share, tmp_path):
    emulator = work_share
    registries = emulator.mgmt_client(ContainerRegistryManagementClient).registries
    registries.begin_create(
        RG, "aciprivate", {"location": "eastus", "sku": {"name": "Basic"}}
    ).result()
    identity_id = (
        f"/subscriptions/{emulator.subscription_id}/resourceGroups/{RG}/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/no-pull"
    )
    emulator.mgmt_client(ResourceManagementClient).resources.begin_create_or_update_by_id(
        identity_id, "2023-01-31", {"location": "eastus"}
    ).result()
    run = play(
        emulator,
        tmp_path,
        "-e",
        "aci_share_create=false",
        "-e",
        "aci_name=private",
        "-e",
        "aci_image=aciprivate.azurecr.io/tools/python:1",
        "-e",
        f"aci_registry_identity={identity_id}",
        "-e",
        "aci_command='echo never'",
    )
    assert run.returncode != 0
    assert "container group private was not created" in run.stdout
    assert "is not accessible" in run.stdout and "AcrPull" in run.stdout
    assert groups(emulator) == []


def test_a_mount_of_a_missing_share_is_refused_before_anything_is_created(azure, tmp_path):
    run = play(
        azure,
        tmp_path,
        "-e",
        "aci_name=nomount",
        "-e",
        "aci_command='true'",
        "-e",
        '{"aci_mounts": [{"share": "missing", "mount_path": "/data"}]}',
    )
    assert run.returncode != 0
    assert "share 'missing' (mounted at /data) does not exist" in run.stdout
    assert "Nothing was created" in run.stdout
    with pytest.raises(ResourceNotFoundError):
        azure.mgmt_client(ResourceManagementClient).resource_groups.get(RG)
    assert groups(azure) == []
