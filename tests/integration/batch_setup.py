"""Azure Batch world for the tier's integration tests: a resource group, a registry holding the
WAA image (imported from Docker Hub), the pool's user-assigned identity with AcrPull on it, a
Batch account and a container pool (azure-mgmt-batch), and the Batch tier built on it as
``eval_run`` builds it."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.batch import BatchManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient

from ansible_collections.openadapt.azure_eval.plugins.module_utils.tiers.batch import BatchTier

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = REPO_ROOT / "worker" / "waa_worker.py"
RG, ACCOUNT, REGISTRY, LOCATION = "tierbatch", "waatier", "waatieracr", "eastus"
IMAGE = f"{REGISTRY}.azurecr.io/winarena:latest"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
FAST_JOB_ENV = {"HEARTBEAT_INTERVAL": "0.25", "WAA_STANDIN_TIME_SCALE": "0.02"}


class BatchTierWorld:
    def __init__(self, emulator, nodes: int = 2, low_priority: int = 0, pool: str = "waa"):
        self.emulator = emulator
        sub = f"/subscriptions/{emulator.subscription_id}"
        resources = emulator.mgmt_client(ResourceManagementClient)
        resources.resource_groups.create_or_update(RG, {"location": LOCATION})
        self.identity = resources.resources.begin_create_or_update_by_id(
            f"{sub}/resourceGroups/{RG}/providers/Microsoft.ManagedIdentity/"
            "userAssignedIdentities/pool-pull",
            "2023-01-31",
            {"location": LOCATION},
        ).result()
        acr = emulator.mgmt_client(ContainerRegistryManagementClient)
        registry = acr.registries.begin_create(
            RG, REGISTRY, {"location": LOCATION, "sku": {"name": "Basic"}}
        ).result()
        acr.registries.begin_import_image(
            RG,
            REGISTRY,
            {
                "source": {"registry_uri": "docker.io", "source_image": "windowsarena/winarena"},
                "target_tags": ["winarena:latest"],
            },
        ).result()
        emulator.mgmt_client(AuthorizationManagementClient).role_assignments.create(
            registry.id,
            str(uuid.uuid4()),
            {
                "role_definition_id": f"{sub}/providers/Microsoft.Authorization/"
                f"roleDefinitions/{ACR_PULL}",
                "principal_id": self.identity.properties["principalId"],
                "principal_type": "ServicePrincipal",
            },
        )
        self.mgmt = emulator.mgmt_client(BatchManagementClient)
        self.account = self.mgmt.batch_account.begin_create(
            RG, ACCOUNT, {"location": LOCATION, "pool_allocation_mode": "BatchService"}
        ).result()
        self.pool_name = pool
        self.make_pool(pool, nodes, low_priority)

    def make_pool(
        self,
        name: str,
        nodes: int,
        low_priority: int = 0,
        start_task: dict[str, Any] | None = None,
        **vm: Any,
    ) -> None:
        configuration = {
            "image_reference": {
                "publisher": "microsoft-azure-batch",
                "offer": "ubuntu-server-container",
                "sku": "20-04-lts",
                "version": "latest",
            },
            "node_agent_sku_id": "batch.node.ubuntu 20.04",
            "container_configuration": {
                "type": "DockerCompatible",
                "container_image_names": [IMAGE],
                "container_registries": [
                    {
                        "registry_server": f"{REGISTRY}.azurecr.io",
                        "identity_reference": {"resource_id": self.identity.id},
                    }
                ],
            },
            "security_profile": {"security_type": "standard"},
            **vm,
        }
        self.mgmt.pool.create(
            RG,
            ACCOUNT,
            name,
            {
                "identity": {
                    "type": "UserAssigned",
                    "user_assigned_identities": {self.identity.id: {}},
                },
                "vm_size": "Standard_D4s_v5",
                "deployment_configuration": {"virtual_machine_configuration": configuration},
                "scale_settings": {
                    "fixed_scale": {
                        "target_dedicated_nodes": nodes,
                        "target_low_priority_nodes": low_priority,
                    }
                },
                **({"start_task": start_task} if start_task else {}),
            },
        )

    def wait_steady(self, pool: str | None = None, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.mgmt.pool.get(RG, ACCOUNT, pool or self.pool_name)
            if found.allocation_state == "Steady":
                return found
            time.sleep(0.2)
        raise AssertionError("the pool did not become steady")

    def tier(
        self,
        run_name: str,
        job_environment: dict[str, str] | None = None,
        pool: str | None = None,
        **options: Any,
    ) -> BatchTier:
        return BatchTier.from_environment(
            {**os.environ, **self.emulator.env},
            {
                "account_name": ACCOUNT,
                "account_url": self.account.account_endpoint,
                "pool": pool or self.pool_name,
                "image": IMAGE,
                **options,
            },
            worker_script=WORKER_SCRIPT.read_text(),
            run_name=run_name,
            job_environment={**FAST_JOB_ENV, **(job_environment or {})},
            node_sample_interval=0.2,
            pool_check_interval=0.5,
        )
