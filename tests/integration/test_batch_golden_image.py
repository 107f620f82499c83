"""WAA's golden image on the Batch tier (issue 9): the pool's start task fetches it from a blob
container with the pool's user-assigned identity (resource files), and each task's worker boots
the stand-in VM from the start task's copy before its first task; a VM hanging at boot is caught
within the boot limit plus a poll and its tasks run elsewhere. An identity without Storage
Blob Data Reader fails the start task on every node with Batch's code, and the run stops with the
fix and loses no task. azure-batch and azure-mgmt-batch read the start task's resource files
back as they were sent."""

from __future__ import annotations

import re

import pytest
from aml_setup import GOLDEN_IMAGE, blob_container
from azure.batch.models import BatchErrorException
from azure.storage.blob import BlobServiceClient
from batch_setup import ACCOUNT, RG, BatchTierWorld
from test_aml_evaluation import TASKS, assert_every_task_once, engine_config, events, ledger_jobs

from ansible_collections.openadapt.azure_eval.plugins.module_utils.engine import EvaluationEngine
from ansible_collections.openadapt.azure_eval.plugins.module_utils.failures import (
    PermanentFailure,
)
from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.batch import (
    BatchSetupError,
)

pytestmark = pytest.mark.integration

IMAGE_ACCOUNT = "tierbatchimages"
BOOT_PHASES = ["started", "image_ready", "vm_starting", "vm_ready"]
GOLDEN_DIR = "golden/storage"  # the start task's filePath "golden", the blobs under "storage/"


def container(world: BatchTierWorld, name: str, *, reader: str | None, upload: bool = True) -> str:
    """A private container holding the synthetic golden image under ``storage/``, readable by
    ``reader`` (Storage Blob Data Reader); returns its URL."""
    emulator = world.emulator
    blob_container(emulator, RG, IMAGE_ACCOUNT, name, reader or None)
    url = f"https://{IMAGE_ACCOUNT}.blob.core.windows.net"
    blobs = BlobServiceClient(url, credential=emulator.credential()).get_container_client(name)
    for path in sorted(GOLDEN_IMAGE.iterdir()) if upload else []:
        with open(path, "rb") as data:
            blobs.upload_blob(f"storage/{path.name}", data, overwrite=True)
    return f"{url}/{name}"


def start_task(world: BatchTierWorld, url: str) -> dict:
    """What role batch_pool sends (azure_rm_batchaccountpool's start_task, snake case as
    azure-mgmt-batch takes it)."""
    return {
        "command_line": "/bin/bash -c 'test -s \"$AZ_BATCH_NODE_STARTUP_DIR/wd/golden/storage/"
        "data.img\" || { echo data.img missing >&2; exit 1; }'",
        "resource_files": [
            {
                "storage_container_url": url,
                "blob_prefix": "storage/",
                "file_path": "golden",
                "identity_reference": {"resource_id": world.identity.id},
            }
        ],
        "wait_for_success": True,
        "max_task_retry_count": 0,
    }


def evaluate(world, tier, run_id, ledger_path, tasks, **overrides):
    try:
        return EvaluationEngine(
            tier,
            tasks,
            ledger_path,
            engine_config(
                run_id,
                tier.price_per_node_hour,
                **{
                    "startup_timeout": 30.0,
                    "vm_boot_timeout": 30.0,
                    "stuck_after": 10.0,
                    **overrides,
                },
            ),
            handle_signals=False,
        ).run()
    finally:
        tier.close()


@pytest.fixture
def world(azure):
    azure.admin("DELETE", "batch/faults")
    return BatchTierWorld(azure, nodes=0)


def test_every_task_boots_the_vm_from_the_start_tasks_copy_of_the_image(world, tmp_path):
    url = container(world, "golden", reader=world.identity.properties["principalId"])
    world.make_pool("golden", 2, start_task=start_task(world, url))
    world.wait_steady("golden")
    tasks = TASKS[:6]
    ledger_path = tmp_path / "ledger.sqlite3"
    tier = world.tier("batch-golden", pool="golden", golden_image_dir=GOLDEN_DIR)
    client = tier.client
    assert tier.describe()["golden_image"].endswith("/wd/golden/storage")

    result = evaluate(world, tier, "batch-golden", ledger_path, tasks, workers=2)

    assert result.status == "completed" and not result.retries
    assert_every_task_once(ledger_path, tasks)
    jobs = ledger_jobs(ledger_path)
    for job in jobs.values():
        log = b"".join(client.file.get_from_task("batch-golden", job.handle, "stdout.txt"))
        found = [e for e in events(log.decode()) if e["event"] != "heartbeat"]
        assert [e["event"] for e in found[:4]] == BOOT_PHASES, found[:5]
        assert found[4]["event"] == "task_started"
        # The start task's working directory of the task's node, where its resource file went.
        assert found[1]["path"].endswith("/startup/wd/golden/storage")
        assert "data.img" in found[1]["files"]
    boot = result.to_dict()["boot"]
    assert set(boot["jobs"]) == set(jobs)
    assert all(j["ready"] and j["boot_s"] is not None for j in boot["jobs"].values())
    assert boot["vm_boot_timeout_s"] == 30.0
    # The job's environment boots the VM (no WAA_VM_BOOT=0 with a golden image).
    job = client.job.get("batch-golden")
    assert "WAA_VM_BOOT" not in {s.name for s in job.common_environment_settings or []}
    nodes = list(client.compute_node.list("golden"))
    assert {n.state for n in nodes} <= {"idle", "running"}
    assert all(n.start_task_info.result == "success" for n in nodes)


def test_a_vm_hanging_at_boot_is_caught_within_the_boot_limit_and_its_tasks_run_elsewhere(
    world, azure, tmp_path
):
    url = container(world, "hang", reader=world.identity.properties["principalId"])
    world.make_pool("hang", 2, start_task=start_task(world, url))
    world.wait_steady("hang")
    azure.admin("POST", "ml/faults", {"fault": "boot_hang", "job": "-0001$"})
    ledger_path = tmp_path / "ledger.sqlite3"
    tasks = TASKS[:6]
    limit, poll = 6.0, 0.2
    # The worker itself would wait as long as WAA does: the engine's limit is what ends it.
    tier = world.tier(
        "batch-hang",
        pool="hang",
        golden_image_dir=GOLDEN_DIR,
        job_environment={"WAA_VM_BOOT_TIMEOUT": "0"},
    )
    try:
        result = evaluate(
            world,
            tier,
            "batch-hang",
            ledger_path,
            tasks,
            workers=2,
            vm_boot_timeout=limit,
            poll_interval=poll,
        )
    finally:
        azure.admin("DELETE", "ml/faults")

    assert_every_task_once(ledger_path, tasks)
    [retry] = result.retries
    assert retry.code == "VmBootTimeout", retry
    with Ledger(ledger_path) as ledger:
        [recorded] = ledger.retries()
        results = ledger.results()
    # Seen within the limit plus one poll, and what a loaded machine adds to reading it.
    waited = re.search(r"(\d+)s after vm_starting", recorded["reason"])
    assert waited and limit <= int(waited.group(1)) <= limit + poll + 2, recorded["reason"]
    assert all(results[t].job_key != retry.job_key for t in retry.requeued_task_ids)
    assert retry.requeued_task_ids
    assert result.to_dict()["boot"]["jobs"][retry.job_key]["ready"] is False


def test_the_sdks_read_the_pools_start_task_resource_files_back(world):
    url = container(world, "golden", reader=world.identity.properties["principalId"])
    world.make_pool("readback", 0, start_task=start_task(world, url))
    files = world.mgmt.pool.get(RG, ACCOUNT, "readback").start_task.resource_files
    assert (files[0].storage_container_url, files[0].blob_prefix, files[0].file_path) == (
        url,
        "storage/",
        "golden",
    )
    assert files[0].identity_reference.resource_id == world.identity.id
    data_plane = world.tier("batch-readback", pool="readback").client.pool.get("readback")
    (read,) = data_plane.start_task.resource_files
    assert (read.storage_container_url, read.blob_prefix, read.file_path) == (
        url,
        "storage/",
        "golden",
    )
    assert read.identity_reference.resource_id == world.identity.id
    assert data_plane.start_task.wait_for_success is True


def test_an_identity_without_blob_reader_fails_the_start_task_and_the_run_names_the_fix(
    world, tmp_path
):
    url = container(world, "noread", reader=None)
    world.make_pool("noread", 1, start_task=start_task(world, url))
    world.wait_steady("noread")
    ledger_path = tmp_path / "ledger.sqlite3"
    tier = world.tier("batch-noread", pool="noread", golden_image_dir=GOLDEN_DIR)
    client = tier.client

    with pytest.raises(PermanentFailure) as raised:
        evaluate(world, tier, "batch-noread", ledger_path, TASKS[:4], workers=1)

    message = str(raised.value)
    assert "start task failed (ResourceContainerAccessDenied)" in message
    assert "Access for one of the specified Azure Blob container(s) is denied" in message
    assert "Storage Blob Data Reader" in message and "tasks_from readers" in message
    (node,) = client.compute_node.list("noread")
    assert str(getattr(node.state, "value", node.state)).lower() == "starttaskfailed"
    info = node.start_task_info
    assert (info.result, info.failure_info.code) == ("failure", "ResourceContainerAccessDenied")
    assert info.failure_info.category == "usererror" and info.exit_code is None
    with Ledger(ledger_path) as ledger:
        # No task lost: none has a result, so a rerun after the grant does them all.
        assert ledger.results() == {} and ledger.duplicates_ignored == 0


def test_a_container_without_the_image_fails_the_start_tasks_check_naming_the_upload(
    world, tmp_path
):
    url = container(world, "empty", reader=world.identity.properties["principalId"], upload=False)
    world.make_pool("empty", 1, start_task=start_task(world, url))
    world.wait_steady("empty")
    tier = world.tier("batch-empty", pool="empty", golden_image_dir=GOLDEN_DIR)

    with pytest.raises(PermanentFailure) as raised:
        evaluate(world, tier, "batch-empty", tmp_path / "ledger.sqlite3", TASKS[:2], workers=1)

    assert "start task failed (FailureExitCode)" in str(raised.value)
    assert "playbooks/waa_image.yml" in str(raised.value)


def test_resource_files_the_emulator_cannot_fetch_are_refused_when_the_pool_is_created(world):
    task = start_task(world, f"https://{IMAGE_ACCOUNT}.blob.core.windows.net/golden")
    for resource_file, said in (
        ({"auto_storage_container_name": "golden"}, "autoStorageContainerName is not emulated"),
        (
            {"storage_container_url": f"https://{IMAGE_ACCOUNT}.blob.core.windows.net/g?sv=x"},
            "SAS URLs are not emulated",
        ),
        ({"http_url": "https://example.org/data.img", "file_path": "d"}, "Azure Blob Storage"),
        (
            {"storage_container_url": task["resource_files"][0]["storage_container_url"]}
            | {"file_path": "../escape"},
            "stay in the task's working directory",
        ),
    ):
        with pytest.raises(Exception, match=said):
            world.make_pool("refused", 0, start_task={**task, "resource_files": [resource_file]})


def test_a_golden_image_dir_on_a_pool_without_a_start_task_is_refused_before_anything_starts(
    world,
):
    with pytest.raises(BatchSetupError, match="no start task that fetches WAA's golden image"):
        world.tier("batch-nostart", golden_image_dir=GOLDEN_DIR)
    with pytest.raises(BatchSetupError, match="relative to the start task's working directory"):
        world.tier("batch-abs", golden_image_dir="/etc")
    with pytest.raises(BatchErrorException):
        world.tier("batch-ok").client.job.get("batch-nostart")
