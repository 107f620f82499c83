"""What ARM knows about resource providers: Azure's regions, the namespaces Azure publishes
(``data/namespaces.txt``), and for the namespaces localazure implements, their resource types,
the regions each is offered in and its API versions. The providers API answers from here, and
every service checks a new resource's location against it. Sources: ``data/README.md``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from localazure.core.errors import AzureError, bad_request

# name -> (display name, geography group), Azure's public physical regions.
REGIONS: dict[str, tuple[str, str]] = {
    "eastus": ("East US", "US"),
    "eastus2": ("East US 2", "US"),
    "southcentralus": ("South Central US", "US"),
    "westus2": ("West US 2", "US"),
    "westus3": ("West US 3", "US"),
    "australiaeast": ("Australia East", "Asia Pacific"),
    "southeastasia": ("Southeast Asia", "Asia Pacific"),
    "northeurope": ("North Europe", "Europe"),
    "swedencentral": ("Sweden Central", "Europe"),
    "uksouth": ("UK South", "Europe"),
    "westeurope": ("West Europe", "Europe"),
    "centralus": ("Central US", "US"),
    "southafricanorth": ("South Africa North", "Africa"),
    "centralindia": ("Central India", "Asia Pacific"),
    "eastasia": ("East Asia", "Asia Pacific"),
    "japaneast": ("Japan East", "Asia Pacific"),
    "koreacentral": ("Korea Central", "Asia Pacific"),
    "canadacentral": ("Canada Central", "Canada"),
    "francecentral": ("France Central", "Europe"),
    "germanywestcentral": ("Germany West Central", "Europe"),
    "italynorth": ("Italy North", "Europe"),
    "norwayeast": ("Norway East", "Europe"),
    "polandcentral": ("Poland Central", "Europe"),
    "switzerlandnorth": ("Switzerland North", "Europe"),
    "uaenorth": ("UAE North", "Middle East"),
    "brazilsouth": ("Brazil South", "South America"),
    "qatarcentral": ("Qatar Central", "Middle East"),
    "northcentralus": ("North Central US", "US"),
    "westus": ("West US", "US"),
    "westcentralus": ("West Central US", "US"),
    "southafricawest": ("South Africa West", "Africa"),
    "australiacentral": ("Australia Central", "Asia Pacific"),
    "australiacentral2": ("Australia Central 2", "Asia Pacific"),
    "australiasoutheast": ("Australia Southeast", "Asia Pacific"),
    "japanwest": ("Japan West", "Asia Pacific"),
    "koreasouth": ("Korea South", "Asia Pacific"),
    "southindia": ("South India", "Asia Pacific"),
    "westindia": ("West India", "Asia Pacific"),
    "canadaeast": ("Canada East", "Canada"),
    "francesouth": ("France South", "Europe"),
    "germanynorth": ("Germany North", "Europe"),
    "norwaywest": ("Norway West", "Europe"),
    "switzerlandwest": ("Switzerland West", "Europe"),
    "ukwest": ("UK West", "Europe"),
    "uaecentral": ("UAE Central", "Middle East"),
    "brazilsoutheast": ("Brazil Southeast", "South America"),
}
EVERY_REGION = tuple(REGIONS)
GLOBAL = ("global",)

# namespace -> resource type -> (regions, api versions); only what localazure implements.
PROVIDERS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "Microsoft.Resources": {
        "resourceGroups": (EVERY_REGION, ("2024-03-01", "2022-09-01", "2021-04-01")),
        "subscriptions": (GLOBAL, ("2022-12-01", "2021-01-01")),
        "subscriptions/locations": (GLOBAL, ("2022-12-01", "2021-01-01")),
        "subscriptions/providers": (GLOBAL, ("2024-03-01", "2022-09-01", "2021-04-01")),
        "subscriptions/resources": (GLOBAL, ("2024-03-01", "2022-09-01", "2021-04-01")),
        "subscriptions/resourceGroups/resources": (GLOBAL, ("2024-03-01", "2022-09-01")),
    },
    "Microsoft.Authorization": {
        "roleDefinitions": (GLOBAL, ("2022-05-01-preview", "2022-04-01", "2018-01-01-preview")),
        "roleAssignments": (GLOBAL, ("2022-04-01", "2020-10-01-preview", "2020-04-01-preview")),
    },
    "Microsoft.ManagedIdentity": {
        "userAssignedIdentities": (EVERY_REGION, ("2024-11-30", "2023-01-31", "2018-11-30")),
    },
    "Microsoft.Storage": {
        "storageAccounts": (EVERY_REGION, ("2023-05-01", "2023-01-01", "2022-09-01")),
        "storageAccounts/blobServices": (EVERY_REGION, ("2023-05-01", "2023-01-01")),
        "storageAccounts/blobServices/containers": (EVERY_REGION, ("2023-05-01", "2023-01-01")),
        "storageAccounts/fileServices/shares": (EVERY_REGION, ("2023-05-01", "2023-01-01")),
        "checkNameAvailability": (GLOBAL, ("2023-05-01", "2023-01-01")),
    },
    "Microsoft.ContainerRegistry": {
        "registries": (EVERY_REGION, ("2023-07-01", "2023-01-01-preview", "2019-05-01")),
        "checkNameAvailability": (GLOBAL, ("2023-07-01", "2019-05-01")),
    },
    "Microsoft.KeyVault": {
        "vaults": (EVERY_REGION, ("2023-07-01", "2023-02-01", "2022-07-01", "2021-10-01")),
        "deletedVaults": (GLOBAL, ("2023-07-01", "2023-02-01", "2022-07-01")),
        "locations/deletedVaults": (EVERY_REGION, ("2023-07-01", "2023-02-01", "2022-07-01")),
        "checkNameAvailability": (GLOBAL, ("2023-07-01", "2023-02-01", "2022-07-01")),
    },
    "Microsoft.MachineLearningServices": {
        "workspaces": (EVERY_REGION, ("2025-06-01", "2024-10-01", "2024-04-01", "2023-10-01")),
        "workspaces/computes": (EVERY_REGION, ("2025-06-01", "2024-10-01", "2024-04-01")),
        "workspaces/jobs": (EVERY_REGION, ("2025-06-01", "2024-10-01", "2024-04-01")),
        "workspaces/environments": (EVERY_REGION, ("2025-06-01", "2024-10-01", "2024-04-01")),
        "workspaces/environments/versions": (EVERY_REGION, ("2025-06-01", "2024-10-01")),
        "workspaces/datastores": (EVERY_REGION, ("2025-06-01", "2024-10-01", "2024-04-01")),
        "locations/vmSizes": (EVERY_REGION, ("2025-06-01", "2024-10-01", "2024-04-01")),
        "locations/usages": (EVERY_REGION, ("2025-06-01", "2024-10-01", "2024-04-01")),
    },
    "Microsoft.ContainerInstance": {
        "containerGroups": (EVERY_REGION, ("2023-05-01", "2022-09-01", "2021-10-01")),
    },
    "Microsoft.Batch": {
        "batchAccounts": (EVERY_REGION, ("2024-07-01", "2024-02-01", "2023-11-01")),
        "batchAccounts/pools": (EVERY_REGION, ("2024-07-01", "2024-02-01", "2023-11-01")),
    },
    "Microsoft.Compute": {
        "virtualMachines": (EVERY_REGION, ("2024-07-01", "2024-03-01", "2023-09-01")),
        "disks": (EVERY_REGION, ("2024-03-02", "2023-10-02", "2023-04-02")),
        "images": (EVERY_REGION, ("2024-07-01", "2024-03-01", "2023-09-01")),
        "locations/publishers": (EVERY_REGION, ("2024-07-01", "2024-03-01")),
        "locations/vmSizes": (EVERY_REGION, ("2024-07-01", "2024-03-01")),
        "locations/usages": (EVERY_REGION, ("2024-07-01", "2024-03-01")),
    },
    "Microsoft.Network": {
        "virtualNetworks": (EVERY_REGION, ("2024-05-01", "2024-03-01", "2023-09-01")),
        "networkSecurityGroups": (EVERY_REGION, ("2024-05-01", "2024-03-01", "2023-09-01")),
        "publicIPAddresses": (EVERY_REGION, ("2024-05-01", "2024-03-01", "2023-09-01")),
        "networkInterfaces": (EVERY_REGION, ("2024-05-01", "2024-03-01", "2023-09-01")),
    },
    "Microsoft.Insights": {
        "metrics": (GLOBAL, ("2021-05-01", "2019-07-01", "2018-01-01")),
        "metricDefinitions": (GLOBAL, ("2021-05-01", "2018-01-01")),
        "metricAlerts": (GLOBAL, ("2018-03-01",)),
        "actionGroups": (GLOBAL, ("2023-01-01", "2022-06-01", "2021-09-01", "2019-06-01")),
    },
}
_IMPLEMENTED = {ns.lower(): ns for ns in PROVIDERS}


@cache
def published_namespaces() -> dict[str, str]:
    """Azure's namespaces by lower-cased name, the implemented ones included."""
    path = Path(__file__).with_name("data") / "namespaces.txt"
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return {name.lower(): name for name in [*names, *PROVIDERS] if name}


def implemented(namespace: str) -> str | None:
    """The implemented namespace's canonical spelling, or None."""
    return _IMPLEMENTED.get(namespace.lower())


def regions_of(resource_type: str) -> tuple[str, ...]:
    namespace, _, type_name = resource_type.partition("/")
    types = PROVIDERS.get(implemented(namespace) or "", {})
    found = next((v for k, v in types.items() if k.lower() == type_name.lower()), None)
    return found[0] if found else ()


def normalise_location(location: str | None) -> str:
    return (location or "").replace(" ", "").lower()


def check_location(location: str | None, resource_type: str) -> str:
    """The normalised location, if Azure offers ``resource_type`` (``Namespace/type``) there."""
    loc = normalise_location(location)
    offered = regions_of(resource_type)
    if loc not in offered:
        display = ",".join(REGIONS[r][0].lower() if r in REGIONS else r for r in offered)
        raise bad_request(
            "LocationNotAvailableForResourceType",
            f"The provided location '{location}' is not available for resource type "
            f"'{resource_type}'. List of available regions for the resource type is "
            f"'{display}'.",
        )
    return loc


def missing_registration(namespace: str) -> AzureError:
    """Azure's answer to any request for a namespace the subscription has not registered."""
    message = (
        f"The subscription is not registered to use namespace '{namespace}'. See "
        "https://aka.ms/rps-not-found for how to register subscriptions."
    )
    return AzureError(
        409,
        "MissingSubscriptionRegistration",
        message,
        details=[
            {"code": "MissingSubscriptionRegistration", "target": namespace, "message": message}
        ],
    )


def invalid_namespace(namespace: str) -> AzureError:
    return bad_request(
        "InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid."
    )


def unrouted_error(path: str) -> AzureError | None:
    """For a path no route serves, under a namespace localazure does not implement (its last
    ``/providers/{ns}`` segment): Azure's answer for an unregistered namespace, or for one that
    does not exist. None when the namespace is implemented (or the path names none)."""
    parts = [p for p in path.split("/") if p]
    providers = [i for i, p in enumerate(parts) if p.lower() == "providers"]
    if not providers or providers[-1] + 1 >= len(parts):
        return None
    namespace = parts[providers[-1] + 1]
    if implemented(namespace):
        return None
    published = published_namespaces().get(namespace.lower())
    return missing_registration(published) if published else invalid_namespace(namespace)


def provider_body(subscription_id: str, namespace: str) -> dict:
    """A provider as ``GET /subscriptions/{id}/providers/{ns}`` returns it."""
    canonical = implemented(namespace)
    body = {
        "id": f"/subscriptions/{subscription_id}/providers/{canonical or namespace}",
        "namespace": canonical or namespace,
        "registrationState": "Registered" if canonical else "NotRegistered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": [],
    }
    for type_name, (regions, versions) in PROVIDERS.get(canonical or "", {}).items():
        body["resourceTypes"].append(
            {
                "resourceType": type_name,
                "locations": [REGIONS[r][0] for r in regions] if regions != GLOBAL else [],
                "apiVersions": list(versions),
                "capabilities": "None",
            }
        )
    return body
