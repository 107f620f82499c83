"""``ansible-playbook site.yml -e tier=batch`` as a user runs it, on an emulator of this module's
own: the golden image layer uploads the synthetic image, the pool's identity gets Storage Blob
Data Reader on it, the pool's start task fetches it, and every job's worker boots the VM from
that copy before its first task; the report has each job's boot time. Then the same with
``batch_preload_images``: the custom VM image is built, the pool is made again from it (Batch
cannot change a pool's image in place) and its nodes start without a pull. (The role's second run,
changed=0 with the start task, is molecule scenario batch_pool's idempotence step: one site run
here keeps the file short.)"""

from __future__ import annotations

import json

import pytest
from azure.batch import BatchServiceClient
from azure.mgmt.batch import BatchManagementClient
from azure.mgmt.compute import ComputeManagementClient
from playbook_runner import Playground, running_playground
from test_aml_evaluation import events

from ansible_collections.openadapt.azure_eval.plugins.module_utils.ledger import Ledger
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.batch import (
    EntraTokenAuth,
)

pytestmark = pytest.mark.integration

RUN, TASKS, WORKERS = "waa-batch", 4, 2
BOOT_PHASES = ["started", "image_ready", "vm_starting", "vm_ready"]
SETTINGS = {
    "eval_max_tasks": TASKS,
    "eval_workers": WORKERS,
    "eval_startup_timeout": 120,
    "eval_vm_boot_timeout": 120,
    "eval_environment_variables": {"WAA_STANDIN_TIME_SCALE": "0.05", "WAA_STANDIN_SEED": "0"},
}


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    with running_playground(tmp_path_factory.mktemp("batch-site")) as playground:
        yield playground


def play(playground: Playground, **more):
    # The local azure_rm inventory of the VM tier reads this emulator too.
    env = {
        "LOCALAZURE_PORT": str(playground.emulator.settings.port),
        "LOCALAZURE_STATE_DIR": str(playground.emulator.settings.state_dir),
    }
    settings = json.dumps({**SETTINGS, **more})
    run = playground.play("-e", "tier=batch", "-e", settings, env=env, timeout=900)
    failed = [b[:1500] for b in run.stdout.split("TASK [") if "fatal: [" in b]
    assert run.returncode == 0, "\n".join(failed) or run.stdout[-4000:] + run.stderr[-2000:]
    return run


@pytest.fixture(scope="module")
def first_run(playground):
    return play(playground)


def test_every_job_boots_the_vm_from_the_start_tasks_copy(playground, first_run):
    with Ledger(playground.runs_dir / RUN / "ledger.sqlite3") as ledger:
        assert len(ledger.results()) == TASKS and ledger.duplicates_ignored == 0
        handles = [job.handle for job in ledger.jobs()]
    client = BatchServiceClient(
        EntraTokenAuth(playground.emulator.credential()),
        batch_url="https://openadaptbatch.eastus.batch.azure.com",
    )
    pool = client.pool.get("waa")
    (resource_file,) = pool.start_task.resource_files
    assert resource_file.storage_container_url.endswith(
        "openadaptwaaimages.blob.core.windows.net/waa-golden-image"
    )
    assert resource_file.identity_reference.resource_id.endswith("/openadaptevals-pull")
    for handle in handles:
        log = b"".join(client.file.get_from_task(RUN, handle, "stdout.txt")).decode()
        found = [e for e in events(log) if e["event"] != "heartbeat"]
        assert [e["event"] for e in found[:4]] == BOOT_PHASES, found[:5]
        assert found[4]["event"] == "task_started"
        assert found[1]["path"].endswith("/startup/wd/golden/storage")
    report = json.loads((playground.report_dir / f"{RUN}.json").read_text())
    assert report["tier"]["golden_image"].endswith("/wd/golden/storage")
    boot = report["evaluation"]["boot"]
    assert set(boot["jobs"]) and all(j["ready"] for j in boot["jobs"].values())
    assert all(j["boot_s"] is not None for j in boot["jobs"].values())
    # The pool went back to zero nodes after the run.
    assert (pool.target_dedicated_nodes, pool.target_low_priority_nodes) == (0, 0)


def test_preloading_makes_the_pool_again_from_a_custom_image_its_nodes_start_without_a_pull(
    playground, first_run
):
    # The pool of the first run came from the marketplace image, and pulled the evaluation
    # image on every node. With batch_preload_images the image build captures a VM that holds
    # it, and the pool (Batch cannot change its image in place) is deleted and made again.
    run = play(
        playground, batch_preload_images=True, eval_run_name="waa-batch-preloaded", eval_max_tasks=2
    )
    assert "Delete the pool (microsoft-azure-batch/ubuntu-server-container" in run.stdout
    pool = playground.client(BatchManagementClient).pool.get(
        "openadapt-agents", "openadaptbatch", "waa"
    )
    image_id = pool.deployment_configuration.virtual_machine_configuration.image_reference.id
    assert "/providers/Microsoft.Compute/images/waa-preloaded-" in image_id, image_id
    image = playground.client(ComputeManagementClient).images.get(
        "openadapt-agents", image_id.rsplit("/", 1)[1]
    )
    assert image.provisioning_state == "Succeeded"
    with Ledger(playground.runs_dir / "waa-batch-preloaded" / "ledger.sqlite3") as ledger:
        assert len(ledger.results()) == 2
    nodes = playground.emulator.admin("GET", "batch/nodes?pool=waa")["value"]
    preloaded = [n for n in nodes if any("|waa-batch-preloaded|" in j for j in n["jobs"])]
    earlier = [n for n in nodes if any("|waa-batch|" in j for j in n["jobs"])]
    assert preloaded and earlier
    assert all(n["batch"]["pull_until"] == n["ready_at"] for n in preloaded), preloaded
    assert all(n["batch"]["pull_until"] > n["ready_at"] for n in earlier), earlier
