"""``ansible-playbook playbooks/image_release.yml`` on a temporary git repository with two images
(one changed since the base ref): the changed image is built with ACR Tasks into staging, its
tests.json runs as Azure ML command jobs, and it is promoted as ``YYYYMMDD.v1`` and ``latest``
(read back with azure-containerregistry); a failing test promotes nothing, leaves no staged image
of the run and no active job; release_num with release_tag fails before anything is built."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path

import aml_setup
import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from playbook_runner import git

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "image_release.yml"
ROOT = "base_images/docker/public"
STAGING, PRODUCTION = "imgstaging", "imgprod"
SECRET_URI = "https://releasevault.vault.azure.net/secrets/staging-reader"


def image_repo(tmp_path: Path, test_command: str) -> Path:
    repo = tmp_path / "images"
    for folder in ("cpu-py312", "tools-py312"):
        path = repo / ROOT / "base" / folder
        path.mkdir(parents=True)
        (path / "Dockerfile").write_text(
            "FROM mcr.microsoft.com/azurelinux/base/python:3.12\nCOPY LICENSE.txt /licenses/\n"
        )
        (path / "LICENSE.txt").write_text("MIT\n")
        (path / "ThirdPartyNotices.txt").write_text("none\n")
    changed = repo / ROOT / "base" / "cpu-py312"
    (changed / "Dockerfile.private").write_text("COPY ThirdPartyNotices.txt /licenses/\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two images")
    tests = {
        "combinations": [
            {"name": "single", "command": "python -c \"print('single node ok')\""},
            {"name": "second", "command": test_command},
        ]
    }
    (changed / "tests.json").write_text(json.dumps(tests))
    (changed / "LICENSE.txt").write_text("MIT, 2026\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "cpu image: tests and licence")
    return repo


@pytest.fixture
def world(azure):
    ml = aml_setup.build(azure, cluster=dict(max_nodes=2), time_scale=0.02)
    acr = azure.mgmt_client(ContainerRegistryManagementClient).registries
    for name in (STAGING, PRODUCTION):
        acr.begin_create(
            aml_setup.RG, name, {"location": "eastus", "sku": {"name": "Basic"}}
        ).result()
    staging_id = ml.registry_id.replace(aml_setup.REGISTRY, STAGING)
    aml_setup.grant_acr_pull(azure, staging_id, ml.principal_id)
    return ml


def play(emulator, tmp_path: Path, repo: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "LOCALAZURE_"))}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    argv = [
        str(REPO / ".venv" / "bin" / "ansible-playbook"),
        str(PLAYBOOK),
        "-e",
        f"localazure_port={emulator.settings.port}",
        "-e",
        f"localazure_state_dir={emulator.settings.state_dir}",
        "-e",
        f"release_repo={repo}",
        "-e",
        "base_ref=HEAD~1",
        "-e",
        "release_build_number=77",
        "-e",
        f"release_resource_group={aml_setup.RG}",
        "-e",
        f"release_staging_registry={STAGING}",
        "-e",
        f"release_production_registry={PRODUCTION}",
        "-e",
        f"release_workspace={aml_setup.WORKSPACE}",
        "-e",
        "release_compute=waa",
        "-e",
        "release_reader_client_id=0f0e0d0c-0000-4000-8000-00000000c1d0",
        "-e",
        f"release_reader_secret_uri={SECRET_URI}",
        "-e",
        f"release_output_dir={tmp_path / 'release'}",
        "-e",
        "release_poll_interval=0.5",
        *extra,
    ]
    return subprocess.run(
        argv,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        stdin=subprocess.DEVNULL,
    )


def registry(emulator, name: str) -> ContainerRegistryClient:
    return ContainerRegistryClient(
        f"https://{name}.azurecr.io",
        emulator.credential(),
        audience="https://management.azure.com",
    )


def tags(emulator, name: str, repository: str) -> set[str]:
    try:
        return {t.name for t in registry(emulator, name).list_tag_properties(repository)}
    except ResourceNotFoundError:
        return set()


def test_the_changed_image_is_built_tested_and_promoted(world, tmp_path):
    emulator = world.emulator
    repo = image_repo(tmp_path, "python -c \"print('second ok')\"")
    run = play(emulator, tmp_path, repo)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    release = json.loads((tmp_path / "release" / "release.json").read_text())
    assert [i["folder"] for i in release["images"]] == ["cpu-py312"]
    assert "cpu-py312--77" in tags(emulator, STAGING, "base")
    today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    assert tags(emulator, PRODUCTION, "public/azureml/cpu-py312") == {f"{today}.v1", "latest"}
    assert tags(emulator, PRODUCTION, "public/azureml/tools-py312") == set()
    [entry] = json.loads((tmp_path / "release" / "import.cfg").read_text())
    assert entry["source"]["imageName"] == f"{STAGING}.azurecr.io/base:cpu-py312--77"
    assert entry["source"]["registryPassword"] == {"keyVaultSecretUri": SECRET_URI}
    runs = [
        json.loads(line)
        for line in (tmp_path / "release" / "run_information.txt").read_text().splitlines()
    ]
    assert {r["experiment"] for r in runs} == {f"image-tests-{today}"}
    assert [world.ml_client.jobs.get(r["name"]).status for r in runs] == ["Completed", "Completed"]


def test_a_failing_test_promotes_nothing_and_cleans_up(world, tmp_path):
    emulator = world.emulator
    repo = image_repo(tmp_path, 'python -c "import time; time.sleep(1); raise SystemExit(4)"')
    run = play(emulator, tmp_path, repo)
    assert run.returncode != 0
    assert "release 77 failed" in run.stdout and "nothing was promoted" in run.stdout
    assert "cpu-py312--77" not in tags(emulator, STAGING, "base")
    assert tags(emulator, PRODUCTION, "public/azureml/cpu-py312") == set()
    runs = [
        json.loads(line)
        for line in (tmp_path / "release" / "run_information.txt").read_text().splitlines()
    ]
    statuses = [world.ml_client.jobs.get(r["name"]).status for r in runs]
    assert len(statuses) == 2 and "Failed" in statuses
    assert all(s in ("Completed", "Failed", "Canceled") for s in statuses)


def test_release_num_and_release_tag_together_fail_before_anything_is_built(world, tmp_path):
    emulator = world.emulator
    repo = image_repo(tmp_path, "true")
    run = play(emulator, tmp_path, repo, "-e", "release_num=2", "-e", "release_tag=20260101.v3")
    assert run.returncode != 0
    assert "release_num and release_tag are mutually exclusive" in run.stdout
    assert tags(emulator, STAGING, "base") == set()
    assert not (tmp_path / "release" / "release.json").exists()
