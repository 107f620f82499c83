"""``ansible-playbook site.yml -e tier=batch`` as a user runs it, on an emulator of this module's
own: the golden image layer uploads the synthetic image, the pool's identity gets Storage Blob
Data Reader on it, the pool's start task fetches it, and every job's worker boots the VM from
that copy before its first task; the report has each job's boot time. (The role's second run,
changed=0 with the start task, is molecule scenario batch_pool's idempotence step: one site run
here keeps the file short.)"""

from __future__ import annotations

import json

import pytest
from azure.batch import BatchServiceClient
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


def play(playground: Playground):
    # The local azure_rm inventory of the VM tier reads this emulator too.
    env = {
        "LOCALAZURE_PORT": str(playground.emulator.settings.port),
        "LOCALAZURE_STATE_DIR": str(playground.emulator.settings.state_dir),
    }
    run = playground.play("-e", "tier=batch", "-e", json.dumps(SETTINGS), env=env, timeout=900)
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
