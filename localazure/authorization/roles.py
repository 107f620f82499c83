"""Built-in role definitions, with Azure's real ids, actions and data actions."""

from __future__ import annotations

from typing import Any

ROLE_DEFINITION_TYPE = "Microsoft.Authorization/roleDefinitions"

_BUILT_IN: dict[str, dict[str, Any]] = {
    "Owner": {
        "id": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "description": "Grants full access to manage all resources, including the ability to "
        "assign roles in Azure RBAC.",
        "actions": ["*"],
        "notActions": [],
    },
    "Contributor": {
        "id": "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "description": "Grants full access to manage all resources, but does not allow you to "
        "assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share image "
        "galleries.",
        "actions": ["*"],
        "notActions": [
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
        ],
    },
    "Reader": {
        "id": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "description": "View all resources, but does not allow you to make any changes.",
        "actions": ["*/read"],
        "notActions": [],
    },
    "User Access Administrator": {
        "id": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
        "description": "Lets you manage user access to Azure resources.",
        "actions": ["*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"],
        "notActions": [],
    },
    "AcrPull": {
        "id": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
        "description": "acr pull",
        "actions": ["Microsoft.ContainerRegistry/registries/pull/read"],
        "notActions": [],
    },
    "AcrPush": {
        "id": "8311e382-0749-4cb8-b61a-304f252e45ec",
        "description": "acr push",
        "actions": [
            "Microsoft.ContainerRegistry/registries/pull/read",
            "Microsoft.ContainerRegistry/registries/push/write",
        ],
        "notActions": [],
    },
    "AcrDelete": {
        "id": "c2f4ef07-c644-48eb-af81-4b1b4947fb11",
        "description": "acr delete",
        "actions": ["Microsoft.ContainerRegistry/registries/artifacts/delete"],
        "notActions": [],
    },
    "Managed Identity Operator": {
        "id": "f1a07417-d97a-45cb-824c-7a7467783830",
        "description": "Read and Assign User Assigned Identity",
        "actions": [
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
            "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
            "Microsoft.Authorization/*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ],
        "notActions": [],
    },
    "AzureML Data Scientist": {
        "id": "f6c7c914-8db3-469d-8ca1-694a8f32e121",
        "description": "Can perform all actions within an Azure Machine Learning workspace, "
        "except for creating or deleting compute resources and modifying the workspace itself.",
        "actions": [
            "Microsoft.MachineLearningServices/workspaces/*/read",
            "Microsoft.MachineLearningServices/workspaces/*/action",
            "Microsoft.MachineLearningServices/workspaces/*/delete",
            "Microsoft.MachineLearningServices/workspaces/*/write",
        ],
        "notActions": [
            "Microsoft.MachineLearningServices/workspaces/delete",
            "Microsoft.MachineLearningServices/workspaces/write",
            "Microsoft.MachineLearningServices/workspaces/computes/*/write",
            "Microsoft.MachineLearningServices/workspaces/computes/*/delete",
        ],
    },
    "Storage Blob Data Reader": {
        "id": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
        "description": "Allows for read access to Azure Storage blob containers and data",
        "actions": [
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        "notActions": [],
        "dataActions": ["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"],
        "notDataActions": [],
    },
    "Storage Blob Data Contributor": {
        "id": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
        "description": "Allows for read, write and delete access to Azure Storage blob "
        "containers and data",
        "actions": [
            "Microsoft.Storage/storageAccounts/blobServices/containers/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        "notActions": [],
        "dataActions": [
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
            "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
        ],
        "notDataActions": [],
    },
    "Storage Blob Data Owner": {
        "id": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "description": "Allows for full access to Azure Storage blob containers and data, "
        "including assigning POSIX access control.",
        "actions": [
            "Microsoft.Storage/storageAccounts/blobServices/containers/*",
            "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
        ],
        "notActions": [],
        "dataActions": ["Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*"],
        "notDataActions": [],
    },
}

BY_NAME = {name.lower(): (name, spec) for name, spec in _BUILT_IN.items()}
BY_ID = {spec["id"]: (name, spec) for name, spec in _BUILT_IN.items()}


def definition_body(subscription_id: str, scope: str, name: str, spec: dict[str, Any]) -> dict:
    """The role definition as ARM returns it at ``scope`` (``/subscriptions/...`` by default)."""
    return {
        "id": f"{scope.rstrip('/')}/providers/{ROLE_DEFINITION_TYPE}/{spec['id']}",
        "name": spec["id"],
        "type": ROLE_DEFINITION_TYPE,
        "properties": {
            "roleName": name,
            "type": "BuiltInRole",
            "description": spec["description"],
            "assignableScopes": ["/"],
            "permissions": [
                {
                    "actions": spec["actions"],
                    "notActions": spec["notActions"],
                    "dataActions": spec.get("dataActions", []),
                    "notDataActions": spec.get("notDataActions", []),
                }
            ],
            "createdOn": "2018-03-13T20:15:35.9320000Z",
            "updatedOn": "2024-01-01T00:00:00.0000000Z",
            "createdBy": None,
            "updatedBy": None,
        },
    }


def role_guid_from_definition_id(definition_id: str) -> str:
    return definition_id.rstrip("/").rsplit("/", 1)[-1].lower()
