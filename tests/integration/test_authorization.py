"""Azure RBAC through azure-mgmt-authorization 4.0.0 and azure.azcollection: built-in role
definitions, role assignments with Azure's validation and scope inheritance, and enforcement of
Microsoft.Authorization/roleAssignments/write on real managed-identity tokens."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible_module import run_module
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient

from localazure.core.store import Store
from localazure.identity.principals import DEV_SP_OBJECT_ID
from localazure.identity.routes import bind_workload_identity

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILT_IN_IDS = {
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "AcrPush": "8311e382-0749-4cb8-b61a-304f252e45ec",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "User Access Administrator": "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",
    "Disk Backup Reader": "3e5e47e6-65f7-47ef-90b5-e5dd4d455f24",
    "Container Registry Repository Reader": "b93aa761-3e63-49ed-ac28-beffa264f7ac",
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
}
IDENTITY_API_VERSION = "2023-01-31"


class Subscription:
    """Ids and clients for one test's subscription, with two resource groups."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.id = f"/subscriptions/{emulator.subscription_id}"
        self.auth = emulator.mgmt_client(AuthorizationManagementClient)
        self.resources = emulator.mgmt_client(ResourceManagementClient)
        for name in ("rbac", "elsewhere"):
            self.resources.resource_groups.create_or_update(name, {"location": "eastus"})
        self.group = f"{self.id}/resourceGroups/rbac"
        self.other_group = f"{self.id}/resourceGroups/elsewhere"

    def role(self, name: str) -> str:
        return f"{self.id}/providers/Microsoft.Authorization/roleDefinitions/{BUILT_IN_IDS[name]}"

    def identity(self, name: str, group: str = "rbac") -> tuple[str, str]:
        """Create a user-assigned identity; return (resource id, principal id)."""
        rid = (
            f"{self.id}/resourceGroups/{group}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
        )
        created = self.resources.resources.begin_create_or_update_by_id(
            rid, IDENTITY_API_VERSION, {"location": "eastus"}
        ).result()
        return created.id, created.properties["principalId"]

    def assign(self, scope: str, principal_id: str, role: str, name: str | None = None, **extra):
        return self.auth.role_assignments.create(
            scope,
            name or str(uuid.uuid4()),
            {"role_definition_id": self.role(role), "principal_id": principal_id, **extra},
        )


@pytest.fixture
def sub(azure) -> Subscription:
    return Subscription(azure)


def managed_identity_credential(
    emulator, principal_id: str, monkeypatch
) -> ManagedIdentityCredential:
    """A credential that gets the identity's tokens from the emulator's managed-identity endpoint
    (App Service protocol). The test stands in for the compute host, which binds an identity to
    a workload by writing the secret into the emulator's store."""
    store = Store(emulator.settings.db_path)
    try:
        secret = bind_workload_identity(SimpleNamespace(store=store), principal_id)
    finally:
        store.close()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.endpoint}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", secret)
    return ManagedIdentityCredential()


def error_code(err: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str]:
    return err.value.status_code, err.value.error.code


# -- role definitions ---------------------------------------------------------------------------


def test_built_in_roles_carry_azure_ids(sub):
    for role_name, guid in BUILT_IN_IDS.items():
        found = list(sub.auth.role_definitions.list(sub.id, filter=f"roleName eq '{role_name}'"))
        assert [(d.id, d.role_name, d.role_type) for d in found] == [
            (sub.role(role_name), role_name, "BuiltInRole")
        ]
        assert found[0].name == guid

    built_in = list(sub.auth.role_definitions.list(sub.group, filter="type eq 'BuiltInRole'"))
    assert set(BUILT_IN_IDS.values()) <= {d.name for d in built_in}
    assert list(sub.auth.role_definitions.list(sub.id, filter="type eq 'CustomRole'")) == []


def test_whole_built_in_catalogue_is_listed_with_data_actions(sub):
    built_in = {d.name: d for d in sub.auth.role_definitions.list(sub.id)}
    assert len(built_in) > 900
    assert {d.role_type for d in built_in.values()} == {"BuiltInRole"}
    blob_reader = built_in[BUILT_IN_IDS["Storage Blob Data Reader"]].permissions[0]
    assert blob_reader.data_actions == [
        "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
    ]
    disk = built_in[BUILT_IN_IDS["Disk Backup Reader"]]
    assert disk.role_name == "Disk Backup Reader"
    assert "Microsoft.Compute/disks/beginGetAccess/action" in disk.permissions[0].actions


def test_any_built_in_role_can_be_assigned(sub):
    _, principal = sub.identity("backup")
    created = sub.assign(sub.group, principal, "Disk Backup Reader")
    assert created.role_definition_id == sub.role("Disk Backup Reader")
    listed = sub.auth.role_assignments.list_for_scope(
        sub.group, filter=f"principalId eq '{principal}'"
    )
    assert [a.role_definition_id for a in listed] == [sub.role("Disk Backup Reader")]


def test_role_definitions_are_read_by_guid_and_by_id(sub):
    pull = sub.auth.role_definitions.get(sub.group, BUILT_IN_IDS["AcrPull"])
    assert pull.role_name == "AcrPull"
    assert pull.permissions[0].actions == ["Microsoft.ContainerRegistry/registries/pull/read"]
    assert sub.auth.role_definitions.get_by_id(sub.role("AcrPush")).role_name == "AcrPush"

    with pytest.raises(ResourceNotFoundError) as err:
        sub.auth.role_definitions.get(sub.id, str(uuid.uuid4()))
    assert error_code(err) == (404, "RoleDefinitionDoesNotExist")


# -- role assignments ---------------------------------------------------------------------------


def test_development_principal_owns_the_subscription(sub):
    owners = list(sub.auth.role_assignments.list_for_scope(sub.id, filter="atScope()"))
    assert [(a.principal_id, a.role_definition_id, a.scope) for a in owners] == [
        (DEV_SP_OBJECT_ID, sub.role("Owner"), sub.id)
    ]


def test_assignment_is_created_read_listed_and_deleted(sub):
    _, principal = sub.identity("reader")
    name = str(uuid.uuid4())
    tenant_level_role = (
        f"/providers/Microsoft.Authorization/roleDefinitions/{BUILT_IN_IDS['Reader']}"
    )

    created = sub.auth.role_assignments.create(
        sub.group,
        name,
        {"role_definition_id": tenant_level_role, "principal_id": principal, "description": "ci"},
    )
    assert created.id == f"{sub.group}/providers/Microsoft.Authorization/roleAssignments/{name}"
    assert (created.scope, created.role_definition_id) == (sub.group, sub.role("Reader"))
    assert (created.principal_type, created.created_by) == ("ServicePrincipal", DEV_SP_OBJECT_ID)
    assert created.description == "ci"

    assert sub.auth.role_assignments.get(sub.group, name).principal_id == principal
    assert sub.auth.role_assignments.get_by_id(created.id).name == name
    listed = sub.auth.role_assignments.list_for_resource_group("rbac")
    assert name in {a.name for a in listed}

    assert sub.auth.role_assignments.delete_by_id(created.id).name == name
    with pytest.raises(ResourceNotFoundError) as err:
        sub.auth.role_assignments.get(sub.group, name)
    assert error_code(err) == (404, "RoleAssignmentNotFound")
    assert sub.auth.role_assignments.delete(sub.group, name) is None


def test_assignment_at_group_applies_to_resources_beneath_it(sub):
    identity_id, principal = sub.identity("puller")
    grant = sub.assign(sub.group, principal, "AcrPull")

    above_identity = sub.auth.role_assignments.list_for_scope(identity_id, filter="atScope()")
    assert grant.id in {a.id for a in above_identity}
    below_subscription = sub.auth.role_assignments.list_for_scope(
        sub.id, filter=f"principalId eq '{principal}'"
    )
    assert [a.id for a in below_subscription] == [grant.id]
    at_subscription = sub.auth.role_assignments.list_for_scope(sub.id, filter="atScope()")
    assert grant.id not in {a.id for a in at_subscription}
    in_other_group = sub.auth.role_assignments.list_for_scope(sub.other_group, filter="atScope()")
    assert grant.id not in {a.id for a in in_other_group}


def test_same_grant_twice_conflicts_and_same_put_is_idempotent(sub):
    _, principal = sub.identity("twice")
    name = str(uuid.uuid4())
    first = sub.assign(sub.group, principal, "AcrPull", name=name)

    repeated = sub.assign(sub.group, principal, "AcrPull", name=name)
    assert (repeated.id, repeated.created_on) == (first.id, first.created_on)
    with pytest.raises(HttpResponseError) as err:
        sub.assign(sub.group, principal, "AcrPull")
    assert error_code(err) == (409, "RoleAssignmentExists")
    assert name.replace("-", "") in err.value.error.message

    with pytest.raises(HttpResponseError) as err:
        sub.assign(sub.group, principal, "AcrPush", name=name)
    assert error_code(err) == (400, "RoleAssignmentUpdateNotPermitted")
    mine = sub.auth.role_assignments.list_for_scope(sub.id, filter=f"principalId eq '{principal}'")
    assert [a.name for a in mine] == [name]


READER = BUILT_IN_IDS["Reader"]
GROUP = "/resourceGroups/rbac"
# Fixed ids no principal or role has (collected identically by every pytest-xdist worker).
UNKNOWN_PRINCIPAL = "0badc0de-0000-4000-8000-000000000001"
UNKNOWN_ROLE = "0badc0de-0000-4000-8000-000000000002"


@pytest.mark.parametrize(
    ("scope_suffix", "principal", "role_guid", "name", "expected"),
    [
        (GROUP, UNKNOWN_PRINCIPAL, READER, None, (400, "PrincipalNotFound")),
        (GROUP, DEV_SP_OBJECT_ID, UNKNOWN_ROLE, None, (400, "RoleDefinitionDoesNotExist")),
        (GROUP, DEV_SP_OBJECT_ID, READER, "reader", (400, "InvalidRoleAssignmentId")),
        ("/resourceGroups/absent", DEV_SP_OBJECT_ID, READER, None, (404, "ResourceGroupNotFound")),
        (
            GROUP + "/providers/Microsoft.ContainerRegistry/registries/absent",
            DEV_SP_OBJECT_ID,
            READER,
            None,
            (404, "ResourceNotFound"),
        ),
    ],
)
def test_invalid_assignments_are_refused(sub, scope_suffix, principal, role_guid, name, expected):
    role_id = f"{sub.id}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}"
    with pytest.raises(HttpResponseError) as err:
        sub.auth.role_assignments.create(
            sub.id + scope_suffix,
            name or str(uuid.uuid4()),
            {"role_definition_id": role_id, "principal_id": principal},
        )
    assert error_code(err) == expected
    if expected[1] == "PrincipalNotFound":
        assert sub.emulator.settings.tenant_id in err.value.error.message


def test_principal_type_must_match_the_directory(sub):
    _, principal = sub.identity("typed")
    with pytest.raises(HttpResponseError) as err:
        sub.assign(sub.group, principal, "Reader", principal_type="User")
    assert error_code(err) == (400, "UnmatchedPrincipalType")


def test_managed_identity_needs_a_role_to_assign_roles(sub, monkeypatch):
    _, principal = sub.identity("operator")
    sub.assign(sub.group, principal, "AcrPush")
    credential = managed_identity_credential(sub.emulator, principal, monkeypatch)
    as_identity = sub.emulator.mgmt_client(AuthorizationManagementClient, credential=credential)
    grant = {"role_definition_id": sub.role("AcrPull"), "principal_id": DEV_SP_OBJECT_ID}

    with pytest.raises(HttpResponseError) as err:
        as_identity.role_assignments.create(sub.group, str(uuid.uuid4()), grant)
    assert error_code(err) == (403, "AuthorizationFailed")
    assert principal in err.value.error.message

    sub.assign(sub.group, principal, "User Access Administrator")
    created = as_identity.role_assignments.create(sub.group, str(uuid.uuid4()), grant)
    assert created.created_by == principal
    with pytest.raises(HttpResponseError) as err:
        as_identity.role_assignments.create(sub.other_group, str(uuid.uuid4()), grant)
    assert error_code(err) == (403, "AuthorizationFailed")


def test_acr_pull_at_group_opens_registries_beneath_it(sub, monkeypatch):
    registries = sub.emulator.mgmt_client(ContainerRegistryManagementClient)
    registry = registries.registries.begin_create(
        "rbac", "rbacpull", {"location": "eastus", "sku": {"name": "Basic"}}
    ).result()
    _, principal = sub.identity("workload")
    credential = managed_identity_credential(sub.emulator, principal, monkeypatch)

    def repositories() -> list[str]:
        client = ContainerRegistryClient(
            f"https://{registry.login_server}",
            credential,
            audience="https://containerregistry.azure.net",
        )
        return list(client.list_repository_names())

    with pytest.raises(ClientAuthenticationError):
        repositories()
    sub.assign(sub.group, principal, "AcrPull")
    assert repositories() == []


def test_assignments_go_with_their_resource_group(sub):
    _, principal = sub.identity("kept", group="elsewhere")
    at_group = sub.assign(sub.group, principal, "Reader")
    at_subscription = sub.assign(sub.id, principal, "AcrPull")

    sub.resources.resource_groups.begin_delete("rbac").result()

    remaining = sub.auth.role_assignments.list_for_scope(
        sub.id, filter=f"principalId eq '{principal}'"
    )
    assert [a.id for a in remaining] == [at_subscription.id]
    assert at_group.id not in {a.id for a in sub.auth.role_assignments.list_for_subscription()}


# -- azure.azcollection -------------------------------------------------------------------------


def test_azcollection_role_assignment_is_idempotent(sub):
    _, principal = sub.identity("ansible")
    args = (
        f"scope={sub.group} assignee_object_id={principal} role_definition_id={sub.role('AcrPull')}"
    )

    first = run_module(sub.emulator, "azure.azcollection.azure_rm_roleassignment", args)
    second = run_module(sub.emulator, "azure.azcollection.azure_rm_roleassignment", args)

    assert (first["changed"], second["changed"]) == (True, False)
    assert first["id"] == second["id"]
    stored = sub.auth.role_assignments.get_by_id(first["id"])
    assert (stored.principal_id, stored.scope) == (principal, sub.group)


def test_repository_data_actions_open_registry_content(sub, monkeypatch):
    registries = sub.emulator.mgmt_client(ContainerRegistryManagementClient)
    registry = registries.registries.begin_create(
        "rbac", "rbacdata", {"location": "eastus", "sku": {"name": "Basic"}}
    ).result()
    registries.registries.begin_import_image(
        "rbac",
        "rbacdata",
        {
            "source": {"registry_uri": "docker.io", "source_image": "library/hello-world:latest"},
            "target_tags": ["library/hello-world:latest"],
        },
    ).result()
    _, principal = sub.identity("reader")
    credential = managed_identity_credential(sub.emulator, principal, monkeypatch)
    client = ContainerRegistryClient(
        f"https://{registry.login_server}",
        credential,
        audience="https://containerregistry.azure.net",
    )

    with pytest.raises(ClientAuthenticationError):
        client.get_manifest_properties("library/hello-world", "latest")
    # Data actions only (repositories/content/read, metadata/read): content, but no catalog.
    sub.assign(registry.id, principal, "Container Registry Repository Reader")
    assert client.get_manifest_properties("library/hello-world", "latest").digest
    with pytest.raises(ClientAuthenticationError):
        list(client.list_repository_names())
    with pytest.raises(ClientAuthenticationError):
        client.delete_tag("library/hello-world", "latest")


# -- custom role definitions --------------------------------------------------------------------


def custom_role(sub, name: str, **permissions) -> dict:
    return {
        "role_name": name,
        "description": f"{name} (test)",
        "role_type": "CustomRole",
        "permissions": [permissions],
        "assignable_scopes": [sub.group],
    }


def test_custom_role_is_created_read_listed_and_deleted(sub):
    guid = str(uuid.uuid4())
    created = sub.auth.role_definitions.create_or_update(
        sub.group, guid, custom_role(sub, "Registry lister", actions=["*/read"])
    )
    assert (created.name, created.role_type, created.assignable_scopes) == (
        guid,
        "CustomRole",
        [sub.group],
    )
    assert sub.auth.role_definitions.get(sub.group, guid).role_name == "Registry lister"
    custom = list(sub.auth.role_definitions.list(sub.group, filter="type eq 'CustomRole'"))
    assert [d.name for d in custom] == [guid]
    # Listed where it is assignable; above that only with atScopeAndBelow().
    assert (
        list(sub.auth.role_definitions.list(sub.other_group, filter="type eq 'CustomRole'")) == []
    )
    below = sub.auth.role_definitions.list(
        sub.id, filter="atScopeAndBelow() and type eq 'CustomRole'"
    )
    assert [d.name for d in below] == [guid]

    updated = sub.auth.role_definitions.create_or_update(
        sub.group,
        guid,
        custom_role(sub, "Registry lister", actions=["*/read"], data_actions=[])
        | {"description": "changed"},
    )
    assert (updated.description, updated.created_on) == ("changed", created.created_on)

    with pytest.raises(HttpResponseError) as err:
        sub.auth.role_definitions.create_or_update(
            sub.group, str(uuid.uuid4()), custom_role(sub, "Registry lister", actions=[])
        )
    assert error_code(err) == (409, "RoleDefinitionWithSameNameExists")

    deleted = sub.auth.role_definitions.delete(sub.group, guid)
    assert deleted.name == guid
    with pytest.raises(ResourceNotFoundError):
        sub.auth.role_definitions.get(sub.group, guid)


def test_custom_role_grants_its_actions_and_data_actions(sub, monkeypatch):
    guid = str(uuid.uuid4())
    sub.auth.role_definitions.create_or_update(
        sub.group,
        guid,
        custom_role(
            sub,
            "Registry content reader",
            actions=["Microsoft.ContainerRegistry/registries/read"],
            data_actions=["Microsoft.ContainerRegistry/registries/catalog/read"],
        ),
    )
    registries = sub.emulator.mgmt_client(ContainerRegistryManagementClient)
    registry = registries.registries.begin_create(
        "rbac", "rbaccustom", {"location": "eastus", "sku": {"name": "Basic"}}
    ).result()
    _, principal = sub.identity("custom")
    credential = managed_identity_credential(sub.emulator, principal, monkeypatch)
    as_identity = sub.emulator.mgmt_client(ContainerRegistryManagementClient, credential=credential)
    client = ContainerRegistryClient(
        f"https://{registry.login_server}",
        credential,
        audience="https://containerregistry.azure.net",
    )
    with pytest.raises(HttpResponseError) as err:
        as_identity.registries.get("rbac", "rbaccustom")
    assert error_code(err) == (403, "AuthorizationFailed")

    assignment = sub.auth.role_assignments.create(
        sub.group,
        str(uuid.uuid4()),
        {
            "role_definition_id": f"{sub.id}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
            "principal_id": principal,
        },
    )
    assert as_identity.registries.get("rbac", "rbaccustom").name == "rbaccustom"
    assert list(client.list_repository_names()) == []
    with pytest.raises(HttpResponseError) as err:
        sub.auth.role_definitions.delete(sub.group, guid)
    assert error_code(err) == (409, "RoleDefinitionHasAssignments")
    sub.auth.role_assignments.delete_by_id(assignment.id)
    sub.auth.role_definitions.delete(sub.group, guid)


def test_built_in_roles_cannot_be_changed(sub):
    with pytest.raises(HttpResponseError) as err:
        sub.auth.role_definitions.create_or_update(
            sub.id, BUILT_IN_IDS["Reader"], custom_role(sub, "Not the reader", actions=["*"])
        )
    assert err.value.status_code == 403


def test_azcollection_role_definition_is_idempotent(sub):
    args = json.dumps(
        {
            "name": "ansible-custom",
            "scope": sub.group,
            "assignable_scopes": [sub.group],
            "permissions": [{"actions": ["Microsoft.Compute/*/read"]}],
            "description": "test",
        }
    )
    module = "azure.azcollection.azure_rm_roledefinition"
    first = run_module(sub.emulator, module, args)
    second = run_module(sub.emulator, module, args)
    assert (first["changed"], second["changed"]) == (True, False)
    assert first["id"] == second["id"]
    info = run_module(
        sub.emulator,
        "azure.azcollection.azure_rm_roledefinition_info",
        f"scope={sub.group} role_name=ansible-custom",
    )
    assert [r["role_name"] for r in info["roledefinitions"]] == ["ansible-custom"]
    removed = run_module(
        sub.emulator, module, f"name=ansible-custom scope={sub.group} state=absent"
    )
    assert removed["changed"] is True
    assert list(sub.auth.role_definitions.list(sub.group, filter="type eq 'CustomRole'")) == []


# -- one check per route, before the handler ------------------------------------------------------


def _as_identity(sub, monkeypatch, name: str):
    """A ResourceManagementClient acting as a new user-assigned identity (no role yet)."""
    _, principal = sub.identity(name)
    credential = managed_identity_credential(sub.emulator, principal, monkeypatch)
    return principal, sub.emulator.mgmt_client(ResourceManagementClient, credential=credential)


def _denied(call, principal: str, action: str, scope: str) -> None:
    with pytest.raises(HttpResponseError) as err:
        call()
    assert error_code(err) == (403, "AuthorizationFailed")
    assert err.value.error.message == (
        f"The client '{principal}' with object id '{principal}' does not have authorization to "
        f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was "
        "recently granted, please refresh your credentials."
    )


def test_arm_core_routes_need_a_role(sub, monkeypatch):
    principal, as_identity = _as_identity(sub, monkeypatch, "nobody")
    groups = "Microsoft.Resources/subscriptions/resourceGroups"

    _denied(lambda: as_identity.resource_groups.get("rbac"), principal, f"{groups}/read", sub.group)
    _denied(
        lambda: as_identity.resource_groups.create_or_update("new", {"location": "eastus"}),
        principal,
        f"{groups}/write",
        f"{sub.id}/resourceGroups/new",
    )
    _denied(
        lambda: as_identity.resource_groups.begin_delete("rbac").result(),
        principal,
        f"{groups}/delete",
        sub.group,
    )
    _denied(
        lambda: list(as_identity.resources.list_by_resource_group("rbac")),
        principal,
        f"{groups}/resources/read",
        sub.group,
    )
    _denied(
        lambda: list(as_identity.providers.list()),
        principal,
        "Microsoft.Resources/subscriptions/providers/read",
        sub.id,
    )
    # Lists of resource groups hold what the caller may read, as in Azure.
    assert list(as_identity.resource_groups.list()) == []
    assert sub.resources.resource_groups.get("rbac").name == "rbac"

    sub.assign(sub.group, principal, "Reader")
    assert as_identity.resource_groups.get("rbac").name == "rbac"
    assert [g.name for g in as_identity.resource_groups.list()] == ["rbac"]
    _denied(
        lambda: as_identity.resource_groups.create_or_update("rbac", {"location": "eastus"}),
        principal,
        f"{groups}/write",
        sub.group,
    )
    # A missing parent is still Azure's 404, for every caller.
    with pytest.raises(ResourceNotFoundError):
        as_identity.resource_groups.get("absent")


def test_each_request_of_a_batch_is_authorized(sub, monkeypatch):
    principal, as_identity = _as_identity(sub, monkeypatch, "batcher")
    sub.assign(sub.group, principal, "Reader")
    api = "api-version=2022-09-01"
    request = HttpRequest(
        "POST",
        f"{sub.emulator.endpoint}/batch?api-version=2020-06-01",
        json={
            "requests": [
                {"httpMethod": "GET", "name": "mine", "url": f"{sub.group}?{api}"},
                {"httpMethod": "GET", "name": "other", "url": f"{sub.other_group}?{api}"},
            ]
        },
    )
    answer = as_identity.resource_groups._client.send_request(request)
    answer.raise_for_status()
    mine, other = answer.json()["responses"]
    assert (mine["name"], mine["httpStatusCode"]) == ("mine", 200)
    assert (other["httpStatusCode"], other["content"]["error"]["code"]) == (
        403,
        "AuthorizationFailed",
    )


def test_ml_routes_are_authorized_before_their_handler(sub, monkeypatch):
    workspace = f"{sub.group}/providers/Microsoft.MachineLearningServices/workspaces/rbacws"
    sub.resources.resources.begin_create_or_update_by_id(
        workspace, "2024-04-01", {"location": "eastus", "identity": {"type": "SystemAssigned"}}
    ).result()
    principal, as_identity = _as_identity(sub, monkeypatch, "mlreader")
    jobs = "Microsoft.MachineLearningServices/workspaces/jobs"
    _denied(
        lambda: as_identity.resources.get_by_id(f"{workspace}/jobs/j1", "2024-04-01"),
        principal,
        f"{jobs}/read",
        f"{workspace}/jobs/j1",
    )
    sub.assign(workspace, principal, "Reader")
    with pytest.raises(ResourceNotFoundError):
        as_identity.resources.get_by_id(f"{workspace}/jobs/j1", "2024-04-01")
    _denied(
        lambda: as_identity.resources.begin_create_or_update_by_id(
            f"{workspace}/jobs/j1", "2024-04-01", {"properties": {}}
        ).result(),
        principal,
        f"{jobs}/write",
        f"{workspace}/jobs/j1",
    )
