"""Every layer playbook runs on its own and talks only to the cloud its inventory names.

- ``playbooks/registry.yml`` alone against the emulator, with bogus Azure credentials in the
  caller's environment (they must not be used), twice (the second run changes nothing);
- ``playbooks/aml.yml`` alone (it runs the registry layer's checks and the layer itself first):
  the Azure ML layer and a small evaluation;
- the emulator's port and state directory come from LOCALAZURE_PORT/LOCALAZURE_STATE_DIR;
- the Azure inventory never starts the emulator;
- then every module's ``EXAMPLES`` and every role README's example play run as a user copies
  them (examples.py), on what ``playbooks/aml.yml`` made (registry, pull identity, workspace,
  cluster, environment): every example task runs (none is skipped) and leaves what it says.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.storage.blob import BlobServiceClient
from examples import (
    GOLDEN,
    MODULE_ORDER,
    MODULES,
    assert_every_task_ran,
    module_examples,
    release_repository,
    role_example_plays,
    run_examples,
    user_project,
)
from playbook_runner import CLUSTER, PLAYBOOKS, PULL_IDENTITY, REGISTRY, RG, running_playground

from localazure.testing import free_port

# Whole ansible-playbook runs: minutes each on a loaded 2-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]

ACR_AUDIENCE = "https://containerregistry.azure.net"
BOGUS_SUBSCRIPTION = str(uuid.uuid4())
# What a shell logged in to real Azure carries: none of it may reach the emulator run.
AMBIENT_AZURE = {
    "AZURE_SUBSCRIPTION_ID": BOGUS_SUBSCRIPTION,
    "AZURE_CLIENT_ID": str(uuid.uuid4()),
    "AZURE_SECRET": "bogus-secret",
    "AZURE_CLIENT_SECRET": "bogus-secret",
    "AZURE_TENANT": str(uuid.uuid4()),
    "AZURE_TENANT_ID": str(uuid.uuid4()),
    "AZURE_CLOUD_ENVIRONMENT": "AzureCloud",
    "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com",
    "ANSIBLE_AZURE_AUTH_SOURCE": "cli",
    "AZURE_PROFILE": "bogus-profile",
}


@pytest.fixture(scope="module")
def playground(tmp_path_factory):
    with running_playground(tmp_path_factory.mktemp("layers")) as playground:
        yield playground


def _paths(playground) -> list[str]:
    return [r["path"] for r in playground.emulator.requests()]


def test_registry_layer_alone_uses_only_the_emulator_and_is_idempotent(playground):
    playground.reset()
    first = playground.play(playbook=PLAYBOOKS / "registry.yml", env=AMBIENT_AZURE)
    assert first.returncode == 0, first.tail()
    assert first.recap()["changed"] > 0

    registry = playground.registries.registries.get(RG, REGISTRY)
    assert registry.login_server == f"{REGISTRY}.azurecr.io"
    assert not any(BOGUS_SUBSCRIPTION in path for path in _paths(playground))
    assert "bogus-secret" not in first.output

    second = playground.play(playbook=PLAYBOOKS / "registry.yml", env=AMBIENT_AZURE)
    assert second.returncode == 0, second.tail()
    assert second.recap()["changed"] == 0, second.tail()

    # The checks' look at the registry decides whether the import runs: a tag gone since the
    # last run is imported again.
    tags = ContainerRegistryClient(
        f"https://{registry.login_server}", playground.emulator.credential(), audience=ACR_AUDIENCE
    )
    tags.delete_tag("winarena", "latest")
    third = playground.play(playbook=PLAYBOOKS / "registry.yml", env=AMBIENT_AZURE)
    assert third.returncode == 0, third.tail()
    assert "openadapt.azure_eval.acr : Import the images" in third.changed_tasks(), third.tail()
    assert tags.get_tag_properties("winarena", "latest").digest


def test_aml_layer_alone_runs_with_the_registry_layer_in_place(playground):
    # After the previous test: the registry layer exists, nothing else.
    run = playground.play(
        "-e", "eval_max_tasks=3", playbook=PLAYBOOKS / "aml.yml", env=AMBIENT_AZURE
    )

    assert run.returncode == 0, run.tail()
    cluster = playground.ml.compute.get(CLUSTER)
    identities = [i.resource_id.lower() for i in cluster.identity.user_assigned_identities]
    assert [i.rsplit("/", 1)[-1] for i in identities] == [PULL_IDENTITY]
    assert (
        playground.ml.environments.get("waa", "1").image == f"{REGISTRY}.azurecr.io/winarena:latest"
    )


def test_the_local_inventory_honours_localazure_port_and_state_dir(playground):
    run = playground.play(
        playbook=PLAYBOOKS / "registry.yml",
        endpoint_args=False,
        env={
            "LOCALAZURE_PORT": str(playground.emulator.settings.port),
            "LOCALAZURE_STATE_DIR": str(playground.emulator.settings.state_dir),
        },
    )

    assert run.returncode == 0, run.tail()
    assert "localazure is already running" in run.output or run.recap()["changed"] == 0
    assert run.recap()["changed"] == 0, run.tail()


def test_the_azure_inventory_never_starts_the_emulator(playground, tmp_path):
    port = free_port()
    state_dir = tmp_path / "never"
    run = playground.play(
        "-i",
        "inventories/azure",
        playbook=PLAYBOOKS / "registry.yml",
        endpoint_args=False,
        env={"LOCALAZURE_PORT": str(port), "LOCALAZURE_STATE_DIR": str(state_dir)},
    )

    assert run.returncode != 0, run.tail()
    assert "No Azure subscription: export AZURE_SUBSCRIPTION_ID" in run.output, run.tail()
    assert not state_dir.exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


# -- the examples, on what the layers made ---------------------------------------------------------


@pytest.fixture
def layers(playground):
    """The emulator with what playbooks/aml.yml makes: made by the Azure ML layer's test above,
    or here when that test did not run first."""
    try:
        playground.ml.compute.get(CLUSTER)
    except ResourceNotFoundError:
        setup = playground.play("-e", "eval_max_tasks=1", playbook=PLAYBOOKS / "aml.yml")
        assert setup.returncode == 0, setup.tail()
    return playground


@pytest.fixture
def project(tmp_path) -> Path:
    return user_project(tmp_path)


def test_every_module_has_examples_in_the_order():
    modules = {path.stem for path in MODULES.glob("*.py") if path.stem != "__init__"}
    assert set(MODULE_ORDER) == modules, "add the new module's examples to MODULE_ORDER"
    for name in MODULE_ORDER:
        examples = module_examples(name)
        assert examples and all(task.get("name") for task in examples), name


def test_every_modules_examples_run_on_the_emulator(layers, project):
    plays, names = [], []
    for module in MODULE_ORDER:
        tasks = module_examples(module)
        plays.append({"name": f"Examples of {module}", "hosts": "localhost", "tasks": tasks})
        names += [task["name"] for task in tasks]
    code = project / "playbooks" / "code"
    code.mkdir()
    (code / "main.py").write_text("print('evaluated')\n")

    playground = layers
    run = run_examples(
        playground,
        project,
        plays,
        "-e",
        f"waa_prepared_image={GOLDEN}",
        "-e",
        f"release_repo={release_repository(project)}",
        "-e",
        "release_build_number=20260101.1",
    )

    assert_every_task_ran(run, names)
    ml = playground.ml
    assert ml.jobs.get("waa-smoke-1").status in ("Completed", "Canceled")
    assert ml.compute.get(CLUSTER).max_instances == 10
    assert (project / "playbooks" / "code-from-share" / "main.py").read_text() == (
        "print('evaluated')\n"
    )
    aci = playground.client(ContainerInstanceManagementClient)
    assert [group.name for group in aci.container_groups.list_by_resource_group(RG)] == []
    blobs = BlobServiceClient(
        "https://openadaptwaaimages.blob.core.windows.net",
        credential=playground.emulator.credential(),
    ).get_container_client("waa-golden-image")
    uploaded = {blob.name for blob in blobs.list_blobs(name_starts_with="storage/")}
    assert {f"storage/{path.name}" for path in GOLDEN.iterdir()} <= uploaded
    assert (project / ".state" / "runs").is_dir()  # eval_run's ledger and status
    # Relative paths are the playbook's: discover's output, aml_job_set's run information.
    assert (project / "playbooks" / "release" / "run_information.txt").is_file()


def test_every_roles_readme_example_runs_on_the_emulator(layers, project):
    examples = role_example_plays()
    assert set(examples) >= {"acr", "vm_pool"}, examples
    plays = [play for role in sorted(examples) for play in examples[role]]

    playground = layers
    run = run_examples(playground, project, plays)

    assert run.returncode == 0, run.tail(120)
    assert run.recap()["failed"] == 0
    names = {registry.name for registry in playground.registries.registries.list()}
    assert "myevals" in names
