"""A canary secret in every place a user can put one, through ``site.yml -e tier=aml -vvv`` on a
small task subset, then looked for everywhere it could leak.

The canaries: an agent API key in ``eval_secret_environment_variables``; the admin password of
a private source registry in ``acr_images[].source_password`` (a real one: the image is imported
from that registry with it); the service principal secret the modules authenticate with (the
emulator's client secret). The places: the playbook's output, the report, the run's state files
(ledger, status, result), the emulator's stored job definitions, its request log, every file of
its state directory (the store with its WAL, the server log, job and worker logs), and the
command lines of every process sampled while the playbook runs (``ps -eo args``).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import uuid
from dataclasses import dataclass, field

import pytest
from azure.keyvault.secrets import SecretClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient
from playbook_runner import (
    REPO,
    RG,
    RUN_NAME,
    TASK_SET,
    VENV_BIN,
    WORKSPACE,
    Playground,
    _pointed_at,
)

from localazure.testing import RunningEmulator

pytestmark = pytest.mark.integration

SOURCE_RG, SOURCE_REGISTRY = "canary-source", "canarysource"
CANARY_VARIABLE = "OPENAI_API_KEY"
TASKS = 6


@dataclass
class CanaryRun:
    returncode: int
    stdout: str
    stderr: str
    canaries: dict[str, str]
    process_lists: list[str] = field(default_factory=list)


def _private_source_registry(emulator: RunningEmulator) -> str:
    """A registry with the admin user and the WAA image; its admin password."""
    emulator.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
        SOURCE_RG, {"location": "eastus"}
    )
    acr = emulator.mgmt_client(ContainerRegistryManagementClient)
    acr.registries.begin_create(
        SOURCE_RG,
        SOURCE_REGISTRY,
        {"location": "eastus", "sku": {"name": "Basic"}, "admin_user_enabled": True},
    ).result()
    acr.registries.begin_import_image(
        SOURCE_RG,
        SOURCE_REGISTRY,
        {
            "source": {"source_image": "windowsarena/winarena:latest", "registry_uri": "docker.io"},
            "target_tags": ["winarena:latest"],
        },
    ).result()
    return acr.registries.list_credentials(SOURCE_RG, SOURCE_REGISTRY).passwords[0].value


def _sample_processes(stop: threading.Event, into: list[str]) -> None:
    while not stop.wait(0.5):
        done = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)
        into.append(done.stdout)


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    root = tmp_path_factory.mktemp("canary")
    emulator = RunningEmulator(root / "localazure").start()
    try:
        with _pointed_at(emulator):
            yield Playground(emulator, root)
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def canary_run(playground) -> CanaryRun:
    playground.reset()
    canaries = {
        "eval secret": f"canary-{uuid.uuid4().hex}",
        "source registry password": _private_source_registry(playground.emulator),
        "service principal secret": playground.client_secret,
    }
    task_ids = [t for ids in json.loads(TASK_SET.read_text()).values() for t in ids][:TASKS]
    extra = {
        "eval_secret_environment_variables": {CANARY_VARIABLE: canaries["eval secret"]},
        "eval_task_ids": task_ids,
        "eval_workers": 2,
        "acr_images": [
            {
                "source": f"{SOURCE_REGISTRY}.azurecr.io/winarena:latest",
                "target_tags": ["winarena:latest"],
                "source_username": SOURCE_REGISTRY,
                "source_password": canaries["source registry password"],
            }
        ],
    }
    # The canaries go in through a vars file, as a user keeps secrets, not on a command line.
    vars_file = playground.root / "canary-vars.json"
    vars_file.write_text(json.dumps(extra))
    vars_file.chmod(0o600)
    argv = [
        str(VENV_BIN / "ansible-playbook"),
        "site.yml",
        "-vvv",
        "-e",
        f"localazure_port={playground.emulator.settings.port}",
        "-e",
        f"localazure_state_dir={playground.emulator.settings.state_dir}",
        "-e",
        f"eval_state_dir={playground.runs_dir}",
        "-e",
        "tier=aml",
        "-e",
        "aml_cluster_idle_seconds=5",
        "-e",
        f"@{vars_file}",
    ]
    samples: list[str] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_processes, args=(stop, samples), daemon=True)
    sampler.start()
    try:
        done = subprocess.run(
            argv,
            cwd=REPO,
            env=playground.env(),
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
        )
    finally:
        stop.set()
        sampler.join(5)
    vars_file.unlink()
    return CanaryRun(done.returncode, done.stdout, done.stderr, canaries, samples)


def _failure(run: CanaryRun) -> str:
    """The failed task's lines of the output (the end of -vvv output is the task profile)."""
    lines = run.stdout.splitlines()
    at = next((i for i, line in enumerate(lines) if "fatal:" in line or "FAILED!" in line), None)
    found = lines[max(at - 20, 0) : at + 40] if at is not None else lines[-60:]
    return "\n".join(found) + "\n-- stderr --\n" + run.stderr[-2000:]


def _places(playground: Playground, run: CanaryRun) -> dict[str, bytes]:
    places = {"stdout": run.stdout.encode(), "stderr": run.stderr.encode()}
    report = playground.report_dir / f"{RUN_NAME}.json"
    places["report"] = report.read_bytes()
    for path in sorted((playground.runs_dir / RUN_NAME).rglob("*")):
        if path.is_file():
            places[f"run state {path.name}"] = path.read_bytes()
    for path in sorted(playground.emulator.settings.state_dir.rglob("*")):
        if path.is_file() and path.suffix != ".pem":
            places[f"emulator {path.relative_to(playground.emulator.settings.state_dir)}"] = (
                path.read_bytes()
            )
    places["request log"] = json.dumps(playground.emulator.requests()).encode()
    for job in playground.jobs():
        definition = {"command": job.command, "environment": job.environment_variables}
        places[f"job definition {job.name}"] = json.dumps(definition).encode()
    for index, listing in enumerate(run.process_lists):
        places[f"ps sample {index}"] = listing.encode()
    return places


def test_the_run_completes_and_the_worker_got_its_secret_from_the_vault(playground, canary_run):
    assert canary_run.returncode == 0, _failure(canary_run)
    report = json.loads((playground.report_dir / f"{RUN_NAME}.json").read_text())
    evaluation = report["evaluation"]
    assert (evaluation["status"], evaluation["total_tasks"]) == ("completed", TASKS)
    assert all(t["status"] in ("success", "fail") for t in evaluation["tasks"].values())

    jobs = playground.jobs()
    assert jobs
    for job in jobs:
        env = job.environment_variables
        assert CANARY_VARIABLE not in env
        assert json.loads(env["WAA_SECRET_NAMES"]) == {CANARY_VARIABLE: "waa-aml-OPENAI-API-KEY"}
        assert env["WAA_SECRETS_VAULT_URL"].endswith(".vault.azure.net")
    vault = SecretClient(
        jobs[0].environment_variables["WAA_SECRETS_VAULT_URL"], playground.emulator.credential()
    )
    stored = vault.get_secret("waa-aml-OPENAI-API-KEY").value
    assert stored == canary_run.canaries["eval secret"]

    workspace = playground.ml.workspaces.get(WORKSPACE)
    assert workspace.resource_group == RG
    assert len(canary_run.process_lists) >= 3


# Where a canary is born, and may therefore be: the emulator keeps the service principal's
# secret in ``client_secret`` (its store has only a hash), and the source registry's admin
# password in that registry's credential records (ACR generated it). Those two are left out of
# the search for that canary only; every other byte of the state directory is searched raw.
_HOME = {
    "service principal secret": ("emulator client_secret",),
    "source registry password": ("emulator state.sqlite3", "emulator state.sqlite3-wal"),
}


def _store_without_registry_credentials(playground: Playground) -> bytes:
    """Every row of the emulator's store (WAL included) except ACR's credential records."""
    path = playground.emulator.settings.db_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = [
            *db.execute("SELECT key, body FROM resources"),
            *db.execute("SELECT kind, key, body FROM records WHERE kind != 'acr-credentials'"),
            *db.execute("SELECT * FROM request_log"),
        ]
    return json.dumps(rows).encode()


def test_no_canary_appears_anywhere(playground, canary_run):
    places = _places(playground, canary_run)
    assert any(name.startswith("emulator state.sqlite3") for name in places)
    assert any("std_log" in name for name in places), sorted(places)
    places["store without registry credentials"] = _store_without_registry_credentials(playground)
    leaks = {
        what: [
            place
            for place, data in places.items()
            if secret.encode() in data and place not in _HOME.get(what, ())
        ]
        for what, secret in canary_run.canaries.items()
    }
    assert leaks == {what: [] for what in canary_run.canaries}


def test_the_canaries_were_really_used(canary_run):
    # A check that cannot fail proves nothing: the output shows the tasks that took them.
    assert "Store each secret in the workspace's Key Vault" in canary_run.stdout
    assert f"{SOURCE_REGISTRY}.azurecr.io/winarena:latest" in canary_run.stdout
    assert "the output has been hidden due to the fact that 'no_log: true'" in canary_run.stdout
