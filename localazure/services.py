"""The emulated services beyond ARM core, in registration order (each a ``core.service.Service``).

A new service is one package with a ``service.py`` defining its ``Service`` class, added here.
"""

from __future__ import annotations

from localazure.acr.service import ContainerRegistryService
from localazure.authorization.service import AuthorizationService
from localazure.batch.service import BatchService
from localazure.compute.service import ComputeService
from localazure.containerinstance.service import ContainerInstanceService
from localazure.core.service import Service
from localazure.identity.service import IdentityService
from localazure.keyvault.service import KeyVaultService
from localazure.ml.service import MachineLearningService
from localazure.monitor.service import MonitorService
from localazure.msi.service import ManagedIdentityService
from localazure.network.service import NetworkService
from localazure.publicregistry.service import PublicRegistryService
from localazure.storage.service import StorageService


def all_services() -> list[Service]:
    """Fresh instances: a service may hold runtime state (ML's scheduler) for one application."""
    return [
        IdentityService(),
        AuthorizationService(),
        ManagedIdentityService(),
        PublicRegistryService(),
        ContainerRegistryService(),
        StorageService(),
        KeyVaultService(),
        MachineLearningService(),
        BatchService(),
        NetworkService(),
        ComputeService(),
        MonitorService(),
        ContainerInstanceService(),
    ]
