"""ACR Tasks quick runs through azure-mgmt-containerregistry 10.3.0 (api-version
2019-06-01-preview, as ``az acr build``): source upload with azure-storage-blob, a
DockerBuildRequest and an EncodedTaskRunRequest, run status and the run's log; and the
``acr_build`` module (check mode, build, idempotence by context digest, a change rebuilds)."""

from __future__ import annotations

import base64
import time

import pytest
from ansible_module import run_module
from azure.containerregistry import ContainerRegistryClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.v2019_06_01_preview.models import (
    DockerBuildRequest,
    EncodedTaskRunRequest,
    PlatformProperties,
)
from azure.mgmt.resource import ResourceManagementClient
from azure.storage.blob import BlobClient

from ansible_collections.openadapt.azure_eval.plugins.modules.acr_build import pack_context

TASKS_API = "2019-06-01-preview"


@pytest.fixture
def registry(azure):
    azure.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
        "acr", {"location": "eastus"}
    )
    client = azure.mgmt_client(ContainerRegistryManagementClient)
    client.registries.begin_create(
        "acr", "buildreg", {"location": "eastus", "sku": {"name": "Basic"}}
    ).result()
    return azure.mgmt_client(ContainerRegistryManagementClient, api_version=TASKS_API)


def _context(tmp_path, text="print('hello')\n"):
    folder = tmp_path / "ctx"
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile").write_text(
        "ARG BASE=docker.io/library/hello-world:latest\nFROM ${BASE}\n"
        'ENV APP=/opt/app\nCOPY app.py /opt/app/\nCMD ["python", "/opt/app/app.py"]\n'
    )
    (folder / "app.py").write_text(text)
    return folder


def _upload(client, folder) -> str:
    archive, _ = pack_context(str(folder))
    upload = client.registries.get_build_source_upload_url("acr", "buildreg")
    BlobClient.from_blob_url(upload.upload_url).upload_blob(archive, overwrite=True)
    return upload.relative_path


def _wait(client, run_id):
    for _ in range(200):
        run = client.runs.get("acr", "buildreg", run_id)
        if run.status in ("Succeeded", "Failed", "Canceled"):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


def _digest(azure, tag):
    data = ContainerRegistryClient(
        "https://buildreg.azurecr.io", azure.credential(), audience="https://management.azure.com"
    )
    return data.get_manifest_properties("app", tag).digest


def test_docker_build_request_builds_and_pushes_with_a_log(azure, registry, tmp_path):
    source = _upload(registry, _context(tmp_path))
    request = DockerBuildRequest(
        source_location=source,
        image_names=["app:{{.Run.ID}}", "app:v1"],
        is_push_enabled=True,
        docker_file_path="Dockerfile",
        platform=PlatformProperties(os="Linux", architecture="amd64"),
    )
    queued = registry.registries.begin_schedule_run("acr", "buildreg", request).result()
    assert queued.status in ("Queued", "Running")
    run = _wait(registry, queued.run_id)
    assert run.status == "Succeeded", run.run_error_message
    assert {i.tag for i in run.output_images} == {queued.run_id, "v1"}
    assert _digest(azure, "v1") == run.output_images[0].digest
    log_link = registry.runs.get_log_sas_url("acr", "buildreg", run.run_id).log_link
    log = BlobClient.from_blob_url(log_link).download_blob().readall().decode()
    assert "Step 2/5 : FROM docker.io/library/hello-world:latest" in log
    assert "Successfully pushed image: buildreg.azurecr.io/app:v1" in log
    assert f"Run ID: {run.run_id} was successful" in log

    # The same context builds the same digest; a changed file another one.
    again = registry.registries.begin_schedule_run(
        "acr",
        "buildreg",
        DockerBuildRequest(
            source_location=_upload(registry, _context(tmp_path)),
            image_names=["app:v2"],
            docker_file_path="Dockerfile",
            platform=PlatformProperties(os="Linux"),
        ),
    ).result()
    assert _wait(registry, again.run_id).output_images[0].digest == _digest(azure, "v1")
    changed = registry.registries.begin_schedule_run(
        "acr",
        "buildreg",
        DockerBuildRequest(
            source_location=_upload(registry, _context(tmp_path, "print('changed')\n")),
            image_names=["app:v3"],
            docker_file_path="Dockerfile",
            platform=PlatformProperties(os="Linux"),
        ),
    ).result()
    assert _wait(registry, changed.run_id).output_images[0].digest != _digest(azure, "v1")


def test_encoded_task_and_a_failing_build(azure, registry, tmp_path):
    folder = _context(tmp_path)
    task = "version: v1.1.0\nsteps:\n  - build: -t $Registry/app:task -f Dockerfile .\n  - push: ['$Registry/app:task']\n"
    run = registry.registries.begin_schedule_run(
        "acr",
        "buildreg",
        EncodedTaskRunRequest(
            encoded_task_content=base64.b64encode(task.encode()).decode(),
            source_location=_upload(registry, folder),
            docker_file_path="Dockerfile",
            platform=PlatformProperties(os="Linux"),
        ),
    ).result()
    assert _wait(registry, run.run_id).status == "Succeeded"
    assert _digest(azure, "task").startswith("sha256:")

    (folder / "Dockerfile").write_text("FROM docker.io/library/hello-world\nCOPY missing.txt /\n")
    failed = registry.registries.begin_schedule_run(
        "acr",
        "buildreg",
        DockerBuildRequest(
            source_location=_upload(registry, folder),
            image_names=["app:broken"],
            docker_file_path="Dockerfile",
            platform=PlatformProperties(os="Linux"),
        ),
    ).result()
    failed = _wait(registry, failed.run_id)
    assert failed.status == "Failed"
    assert "COPY failed" in failed.run_error_message


def test_acr_build_module_is_idempotent_by_context(azure, registry, tmp_path):
    folder = _context(tmp_path)
    args = f"resource_group=acr registry=buildreg context={folder} image_names=app:mod"
    checked = run_module(azure, "openadapt.azure_eval.acr_build", args, check_mode=True)
    assert checked["changed"] is True and "run_id" not in checked
    first = run_module(azure, "openadapt.azure_eval.acr_build", args)
    assert first["changed"] is True and first["run_id"]
    second = run_module(azure, "openadapt.azure_eval.acr_build", args)
    assert second["changed"] is False, second
    assert second["digest"] == _digest(azure, "mod") == first["digest"]
    (folder / "app.py").write_text("print('v2')\n")
    third = run_module(azure, "openadapt.azure_eval.acr_build", args)
    assert third["changed"] is True and third["digest"] != second["digest"]
    missing = run_module(
        azure,
        "openadapt.azure_eval.acr_build",
        f"resource_group=acr registry=buildreg context={tmp_path / 'none'} image_names=app:x",
        check=False,
    )
    assert missing.get("failed") and "is not a folder" in missing["msg"]
