"""Azure ML world for the evaluation integration tests: a resource group, a registry holding the
WAA image (imported from Docker Hub), a workspace (ARM PUT, system-assigned identity), the
AcrPull grant of that identity on the registry (optional), an AmlCompute cluster (raw ARM PUT, so
that any priority and security type can be asked for), and the ``waa`` environment; plus what the
tests read back from the emulator (jobs, their std_logs, nodes) with the real clients."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from azure.ai.ml.entities import Environment
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.blob import BlobServiceClient

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml
from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.aml import AmlTier

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = REPO_ROOT / "worker" / "waa_worker.py"
LOCATION = "eastus"
RG, WORKSPACE, REGISTRY, ENVIRONMENT = "evals", "waa-ws", "waaevals", "waa"
WORKSPACE_API = "2024-10-01"
COMPUTE_API = "2023-08-01-preview"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
WAA_SOURCE = "windowsarena/winarena:latest"
TERMINAL = ("Completed", "Failed", "Canceled")
GOLDEN_IMAGE = REPO_ROOT / "localazure" / "workload" / "data" / "golden_image" / "storage"
IMAGE_ACCOUNT, IMAGE_CONTAINER, DATASTORE = "waaevalimages", "waa-golden-image", "waa_golden_image"
FEED_ACCOUNT, FEED_CONTAINER = "waaevalfeeds", "waa-task-feed"
STORAGE_API = "2023-05-01"
BLOB_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
BLOB_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
DEV_SP_OBJECT_ID = "0c1e5b3a-0000-4000-8000-00000000aa04"
GOLDEN_IMAGE_URI = f"azureml://datastores/{DATASTORE}/paths/storage"
STD_LOG = "user_logs/std_log.txt"

# The job environment of every test run: quick heartbeats and a fast WAA stand-in (0.02 s of
# real time per simulated WAA minute: a median task takes about 0.15 s).
FAST_JOB_ENV = {"HEARTBEAT_INTERVAL": "0.25", "WAA_STANDIN_TIME_SCALE": "0.02"}


@dataclass
class AmlWorld:
    emulator: Any
    resources: ResourceManagementClient
    ml_client: Any
    workspace_id: str
    principal_id: str
    registry_id: str
    environment: str = f"azureml:{ENVIRONMENT}:1"
    clusters: list[str] = field(default_factory=list)
    # The job input every tier() mounts: the synthetic golden image on a datastore.
    golden_image: str = ""

    @property
    def resource_group(self) -> str:
        return RG

    @property
    def workspace(self) -> str:
        return WORKSPACE

    # -- resources --------------------------------------------------------------------------------

    def grant_acr_pull(self) -> None:
        grant_acr_pull(self.emulator, self.registry_id, self.principal_id)

    def cluster(
        self,
        name: str = "waa",
        *,
        size: str = "Standard_D4s_v5",
        max_nodes: int = 3,
        min_nodes: int = 0,
        priority: str = "Dedicated",
        security_type: str = "Standard",
        idle_s: int = 2,
    ) -> str:
        """An AmlCompute cluster through a raw ARM PUT (what a cluster made outside the
        playbook looks like: the SDK entity cannot carry a security type)."""
        compute_id = f"{self.workspace_id}/computes/{name}"
        self.resources.resources.begin_create_or_update_by_id(
            compute_id,
            COMPUTE_API,
            {
                "location": LOCATION,
                "properties": {
                    "computeType": "AmlCompute",
                    "properties": {
                        "vmSize": size,
                        "vmPriority": priority,
                        "scaleSettings": {
                            "minNodeCount": min_nodes,
                            "maxNodeCount": max_nodes,
                            "nodeIdleTimeBeforeScaleDown": f"PT{idle_s}S",
                        },
                        "propertyBag": {"securityType": security_type},
                    },
                },
            },
        ).result()
        self.clusters.append(name)
        return compute_id

    @property
    def image_container_id(self) -> str:
        return (
            f"/subscriptions/{self.emulator.subscription_id}/resourceGroups/{RG}/providers"
            f"/Microsoft.Storage/storageAccounts/{IMAGE_ACCOUNT}/blobServices/default"
            f"/containers/{IMAGE_CONTAINER}"
        )

    def upload_golden_image(self, prefix: str = "storage", source: Path = GOLDEN_IMAGE) -> str:
        """The files of ``source`` under ``prefix`` in the image container (created with its
        account on first use), an identity-based datastore on that container, Storage Blob Data
        Reader on it for the workspace identity (the clusters' jobs read with it); returns the
        job input's URI."""
        storage = self.emulator.mgmt_client(StorageManagementClient)
        if not [
            a
            for a in storage.storage_accounts.list_by_resource_group(RG)
            if a.name == IMAGE_ACCOUNT
        ]:
            blob_container(self.emulator, RG, IMAGE_ACCOUNT, IMAGE_CONTAINER, self.principal_id)
            self.resources.resources.begin_create_or_update_by_id(
                f"{self.workspace_id}/datastores/{DATASTORE}",
                WORKSPACE_API,
                {
                    "properties": {
                        "datastoreType": "AzureBlob",
                        "accountName": IMAGE_ACCOUNT,
                        "containerName": IMAGE_CONTAINER,
                        "credentials": {"credentialsType": "None"},
                    }
                },
            ).result()
        url = f"https://{IMAGE_ACCOUNT}.blob.core.windows.net"
        container = BlobServiceClient(url, credential=self.emulator.credential())
        client = container.get_container_client(IMAGE_CONTAINER)
        for path in sorted(source.iterdir()) if source.is_dir() else []:
            with open(path, "rb") as data:
                client.upload_blob(f"{prefix}/{path.name}", data, overwrite=True)
        return f"azureml://datastores/{DATASTORE}/paths/{prefix}"

    def compute_exists(self, name: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.ml_client.compute.get(name)
        except ResourceNotFoundError:
            return False
        return True

    # -- the product's tier -----------------------------------------------------------------------

    def tier(
        self,
        run_name: str,
        compute: str = "waa",
        job_environment: dict[str, str] | None = None,
        golden_image: str | None = None,
        task_feed: str = "",
    ) -> AmlTier:
        return AmlTier.from_environment(
            {**os.environ, **self.emulator.env},
            resource_group=RG,
            workspace=WORKSPACE,
            compute=compute,
            environment=self.environment,
            experiment_name="waa-integration",
            worker_script=WORKER_SCRIPT.read_text(),
            run_name=run_name,
            job_environment={**FAST_JOB_ENV, **(job_environment or {})},
            node_sample_interval=0.2,
            golden_image=self.golden_image if golden_image is None else golden_image,
            task_feed=task_feed,
        )

    def task_feed(self, container: str = FEED_CONTAINER, *, readable: bool = True) -> str:
        """A task feed container for the jobs (``AmlTier.task_feed``); ``readable``: the
        workspace identity, which the clusters' jobs read with, may read it."""
        reader = self.principal_id if readable else None
        return task_feed_container(self.emulator, RG, reader, container)

    # -- what the emulator holds ------------------------------------------------------------------

    def jobs(self) -> dict[str, str]:
        """Every job of the workspace: name -> status."""
        return {job.name: _status(job.status) for job in self.ml_client.jobs.list()}

    def job_status(self, name: str) -> str:
        return _status(self.ml_client.jobs.get(name).status)

    def job_tasks(self, name: str) -> list[str]:
        """The task ids the job's command hands the worker."""
        command = self.ml_client.jobs.get(name).command
        tail = command.rsplit("--task-ids", 1)[1].split()[0]
        return tail.strip("'\"").split(",")

    def run_error(self, name: str) -> tuple[str | None, str | None]:
        """(category code, inner code) of a failed run, from run history."""
        details = azure_ml.run_details(self.ml_client, name)
        if not details.error or not details.error.error:
            return None, None
        error = details.error.error
        inner = getattr(error, "inner_error", None)
        return error.code, inner.code if inner else None

    def std_log(self, name: str) -> str:
        details = azure_ml.run_details(self.ml_client, name)
        url = (details.log_files or {}).get(STD_LOG)
        if url is None:
            return ""
        response = requests.get(url, timeout=10)
        response.raise_for_status()
        return response.text

    def wait_terminal(self, names=None, timeout: float = 20.0) -> dict[str, str]:
        """Wait until the named jobs (default: all) are terminal; return every job's status."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.jobs()
            wanted = statuses if names is None else {n: statuses[n] for n in names}
            if all(s in TERMINAL for s in wanted.values()):
                return statuses
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still not terminal after {timeout}s: {wanted}")
            time.sleep(0.2)

    def nodes(self, compute: str = "waa") -> dict[str, Any]:
        return self.emulator.admin("GET", f"ml/nodes?compute={compute}")

    def wait_scaled_down(self, compute: str = "waa", timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            report = self.nodes(compute)
            if all(node["released_at"] is not None for node in report["value"]):
                return report
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster {compute} did not scale down: {report['computes']}")
            time.sleep(0.2)


def registry_with_waa(emulator, resource_group: str, registry: str) -> ResourceManagementClient:
    """A resource group and a Basic registry in it holding ``winarena:latest`` (imported from
    Docker Hub); returns the resource client."""
    resources = emulator.mgmt_client(ResourceManagementClient)
    resources.resource_groups.create_or_update(resource_group, {"location": LOCATION})
    acr = emulator.mgmt_client(ContainerRegistryManagementClient)
    acr.registries.begin_create(
        resource_group, registry, {"location": LOCATION, "sku": {"name": "Basic"}}
    ).result()
    acr.registries.begin_import_image(
        resource_group,
        registry,
        {
            "source": {"registryUri": "docker.io", "sourceImage": WAA_SOURCE},
            "targetTags": ["winarena:latest"],
        },
    ).result()
    return resources


def grant_acr_pull(emulator, registry_id: str, principal_id: str) -> None:
    """AcrPull on the registry for a service principal (a managed identity)."""
    grant_role(emulator, registry_id, ACR_PULL, principal_id)


def task_feed_container(
    emulator, resource_group: str, reader_principal_id: str | None, container: str = FEED_CONTAINER
) -> str:
    """A blob container for the AML tier's task feeds, as a user would make one (see
    ``blob_container``; no reader: a misconfigured feed); returns the container's URL."""
    blob_container(emulator, resource_group, FEED_ACCOUNT, container, reader_principal_id)
    return f"https://{FEED_ACCOUNT}.blob.core.windows.net/{container}"


def blob_container(
    emulator, resource_group: str, account: str, container: str, reader_principal_id: str | None
) -> str:
    """A storage account (made if missing) and a container in it, with Storage Blob Data
    Contributor for the controller's principal and Storage Blob Data Reader for
    ``reader_principal_id`` (a compute's identity; None: no reader); returns the container's
    resource id."""
    storage = emulator.mgmt_client(StorageManagementClient)
    accounts = storage.storage_accounts.list_by_resource_group(resource_group)
    if not any(a.name == account for a in accounts):
        storage.storage_accounts.begin_create(
            resource_group,
            account,
            {"location": LOCATION, "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
        ).result()
    container_id = (
        f"/subscriptions/{emulator.subscription_id}/resourceGroups/{resource_group}/providers"
        f"/Microsoft.Storage/storageAccounts/{account}/blobServices/default"
        f"/containers/{container}"
    )
    emulator.mgmt_client(ResourceManagementClient).resources.begin_create_or_update_by_id(
        container_id, STORAGE_API, {"properties": {"publicAccess": "None"}}
    ).result()
    grant_role(emulator, container_id, BLOB_CONTRIBUTOR, DEV_SP_OBJECT_ID)
    if reader_principal_id is not None:
        grant_role(emulator, container_id, BLOB_READER, reader_principal_id)
    return container_id


def grant_role(emulator, scope: str, role: str, principal_id: str) -> None:
    auth = emulator.mgmt_client(AuthorizationManagementClient)
    auth.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        {
            "role_definition_id": f"/subscriptions/{emulator.subscription_id}/providers"
            f"/Microsoft.Authorization/roleDefinitions/{role}",
            "principal_id": principal_id,
            "principal_type": "ServicePrincipal",
        },
    )


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


def build(
    emulator,
    *,
    acr_pull: bool = True,
    cluster: dict[str, Any] | None = None,
    time_scale: float = 0.05,
) -> AmlWorld:
    """Everything an evaluation on the AML tier needs. ``cluster``: the keyword arguments of
    ``AmlWorld.cluster`` (None for no cluster); ``time_scale``: the emulator's ML time scale
    (node provisioning, image pull)."""
    emulator.admin("PUT", "ml/settings", {"time_scale": time_scale})
    sub = f"/subscriptions/{emulator.subscription_id}"
    resources = registry_with_waa(emulator, RG, REGISTRY)
    workspace_id = (
        f"{sub}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices"
        f"/workspaces/{WORKSPACE}"
    )
    workspace = resources.resources.begin_create_or_update_by_id(
        workspace_id,
        WORKSPACE_API,
        {"location": LOCATION, "identity": {"type": "SystemAssigned"}},
    ).result()
    world = AmlWorld(
        emulator=emulator,
        resources=resources,
        ml_client=emulator.ml_client(RG, WORKSPACE),
        workspace_id=workspace_id,
        principal_id=workspace.identity.principal_id,
        registry_id=f"{sub}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry"
        f"/registries/{REGISTRY}",
    )
    if acr_pull:
        world.grant_acr_pull()
    if cluster is not None:
        world.cluster(**cluster)
    world.golden_image = world.upload_golden_image()
    world.ml_client.environments.create_or_update(
        Environment(name=ENVIRONMENT, version="1", image=f"{REGISTRY}.azurecr.io/winarena:latest")
    )
    return world
