"""User-assigned managed identities through ARM (azure-mgmt-msi is not installed, so the raw
azure-core ARM pipeline the SDKs are built on), and their principals in the directory."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.resource import ResourceManagementClient

API_VERSION = "2023-01-31"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
GUID_LENGTH = 36


class Arm:
    def __init__(self, emulator):
        self.endpoint = emulator.endpoint
        self.subscription = f"/subscriptions/{emulator.subscription_id}"
        policy = ARMChallengeAuthenticationPolicy(
            emulator.credential(), emulator.endpoint + "/.default"
        )
        self.client = ARMPipelineClient(base_url=emulator.endpoint, policies=[policy])

    def identity_path(self, group: str, name: str = "") -> str:
        path = (
            f"{self.subscription}/resourceGroups/{group}"
            "/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
        )
        return f"{path}/{name}" if name else path

    def call(
        self, method: str, path: str, body: dict | None = None, api_version: str = API_VERSION
    ) -> HttpResponse:
        request = HttpRequest(method, f"{self.endpoint}{path}?api-version={api_version}", json=body)
        return self.client.send_request(request)


@pytest.fixture
def arm(azure) -> Arm:
    return Arm(azure)


@pytest.fixture
def group(azure) -> str:
    azure.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
        "identities", {"location": "westeurope"}
    )
    return "identities"


def grant_acr_pull(azure, principal_id: str) -> None:
    auth = azure.mgmt_client(AuthorizationManagementClient)
    scope = f"/subscriptions/{azure.subscription_id}"
    auth.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        {
            "role_definition_id": f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL}",
            "principal_id": principal_id,
        },
    )


def test_identity_is_created_updated_read_and_listed(arm, group):
    created = arm.call("PUT", arm.identity_path(group, "worker"), {"location": "West Europe"})
    assert created.status_code == 201
    body = created.json()
    assert body["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert body["location"] == "westeurope"
    props = body["properties"]
    assert len(props["principalId"]) == len(props["clientId"]) == GUID_LENGTH
    assert props["principalId"] != props["clientId"]

    again = arm.call(
        "PUT", arm.identity_path(group, "worker"), {"location": "westeurope", "tags": {"a": "1"}}
    )
    assert again.status_code == 200
    assert again.json()["properties"] == props
    assert again.json()["tags"] == {"a": "1"}

    patched = arm.call("PATCH", arm.identity_path(group, "worker"), {"tags": {"b": "2"}})
    assert patched.json()["tags"] == {"b": "2"}
    assert arm.call("GET", arm.identity_path(group, "WORKER")).json()["id"] == body["id"]

    in_group = arm.call("GET", arm.identity_path(group)).json()["value"]
    in_subscription = arm.call(
        "GET", f"{arm.subscription}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
    ).json()["value"]
    assert [i["id"] for i in in_group] == [i["id"] for i in in_subscription] == [body["id"]]


def test_identity_principal_is_in_the_directory(azure, arm, group):
    created = arm.call("PUT", arm.identity_path(group, "puller"), {"location": "westeurope"})
    principal_id = created.json()["properties"]["principalId"]

    grant_acr_pull(azure, principal_id)

    auth = azure.mgmt_client(AuthorizationManagementClient)
    found = list(
        auth.role_assignments.list_for_subscription(filter=f"principalId eq '{principal_id}'")
    )
    assert [a.principal_type for a in found] == ["ServicePrincipal"]


def test_deleting_identity_removes_its_principal(azure, arm, group):
    created = arm.call("PUT", arm.identity_path(group, "shortlived"), {"location": "westeurope"})
    principal_id = created.json()["properties"]["principalId"]

    assert arm.call("DELETE", arm.identity_path(group, "shortlived")).status_code == 200

    missing = arm.call("GET", arm.identity_path(group, "shortlived"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ResourceNotFound"
    assert arm.call("DELETE", arm.identity_path(group, "shortlived")).status_code == 204
    with pytest.raises(HttpResponseError) as err:
        grant_acr_pull(azure, principal_id)
    assert err.value.error.code == "PrincipalNotFound"


def test_deleting_resource_group_removes_identity_principals(azure, arm, group):
    created = arm.call("PUT", arm.identity_path(group, "ingroup"), {"location": "westeurope"})
    principal_id = created.json()["properties"]["principalId"]

    azure.mgmt_client(ResourceManagementClient).resource_groups.begin_delete(group).result()

    with pytest.raises(HttpResponseError) as err:
        grant_acr_pull(azure, principal_id)
    assert err.value.error.code == "PrincipalNotFound"


def test_invalid_requests_are_refused_as_azure_does(arm, group):
    bad_name = arm.call("PUT", arm.identity_path(group, "x"), {"location": "westeurope"})
    assert (bad_name.status_code, bad_name.json()["error"]["code"]) == (400, "InvalidResourceName")

    no_group = arm.call("PUT", arm.identity_path("absent", "worker"), {"location": "westeurope"})
    assert (no_group.status_code, no_group.json()["error"]["code"]) == (
        404,
        "ResourceGroupNotFound",
    )

    arm.call("PUT", arm.identity_path(group, "pinned"), {"location": "westeurope"})
    moved = arm.call("PUT", arm.identity_path(group, "pinned"), {"location": "eastus"})
    assert (moved.status_code, moved.json()["error"]["code"]) == (400, "InvalidResourceLocation")


def test_isolation_scope_is_honoured_on_put_and_patch(arm, group):
    path = arm.identity_path(group, "isolated")
    api = "2024-11-30"
    created = arm.call(
        "PUT", path, {"location": "westeurope", "properties": {"isolationScope": "Regional"}}, api
    )
    assert created.status_code == 201
    assert created.json()["properties"]["isolationScope"] == "Regional"
    # A PUT that leaves it out keeps it; PATCH changes it.
    again = arm.call("PUT", path, {"location": "westeurope", "tags": {"a": "b"}}, api)
    assert (again.status_code, again.json()["properties"]["isolationScope"]) == (200, "Regional")
    patched = arm.call("PATCH", path, {"properties": {"isolationScope": "None"}}, api)
    assert patched.json()["properties"]["isolationScope"] == "None"
    assert arm.call("GET", path, None, api).json()["properties"]["isolationScope"] == "None"

    refused = arm.call("PATCH", path, {"properties": {"isolationScope": "Global"}}, api)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "InvalidRequestContent"
