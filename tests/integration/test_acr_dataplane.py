"""The registry data plane at ``<name>.azurecr.io`` through azure-containerregistry 1.2.0 (with
its challenge / token-exchange policy) and raw HTTP: ACR's authorization rules for Entra
principals, the admin user and anonymous clients, and ``resolve_image`` for workloads."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient

from localazure.acr import catalog
from localazure.acr.images import ImagePullError, resolve_image
from localazure.core.store import Store
from localazure.identity.principals import DEV_SP_OBJECT_ID
from localazure.identity.routes import bind_workload_identity

REPO_ROOT = Path(__file__).resolve().parents[2]
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
ROLE_DEFINITIONS = "providers/Microsoft.Authorization/roleDefinitions"
IDENTITY_API_VERSION = "2023-01-31"
ARM_AUDIENCE = "https://management.azure.com"
LOGIN = "evalacr.azurecr.io"


class Registry:
    """Registry ``evalacr`` in group ``acr`` holding hello-world (three tags) and aci-helloworld,
    created by the development principal (Owner of the subscription)."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.sub = f"/subscriptions/{emulator.subscription_id}"
        self.resources = emulator.mgmt_client(ResourceManagementClient)
        self.resources.resource_groups.create_or_update("acr", {"location": "eastus"})
        self.mgmt = emulator.mgmt_client(ContainerRegistryManagementClient)
        self.id = (
            self.mgmt.registries.begin_create(
                "acr", "evalacr", {"location": "eastus", "sku": {"name": "Standard"}}
            )
            .result()
            .id
        )
        self.import_image("library/hello-world:latest", ["hello:latest", "hello:v1", "hello:v2"])
        self.import_image("library/hello-world:latest", ["team/base/hello:latest"])
        self.import_image("azuredocs/aci-helloworld:latest", ["web:latest"], "mcr.microsoft.com")

    def import_image(self, image: str, targets: list[str], registry_uri: str = "docker.io"):
        self.mgmt.registries.begin_import_image(
            "acr",
            "evalacr",
            {
                "source": {"registry_uri": registry_uri, "source_image": image},
                "target_tags": targets,
            },
        ).result()

    def client(self, credential) -> ContainerRegistryClient:
        return ContainerRegistryClient(f"https://{LOGIN}", credential, audience=ARM_AUDIENCE)

    def identity(self, name: str) -> str:
        """Create a user-assigned identity; return its principal id."""
        provider = "providers/Microsoft.ManagedIdentity/userAssignedIdentities"
        rid = f"{self.sub}/resourceGroups/acr/{provider}/{name}"
        created = self.resources.resources.begin_create_or_update_by_id(
            rid, IDENTITY_API_VERSION, {"location": "eastus"}
        ).result()
        return created.properties["principalId"]

    def grant(self, principal_id: str, scope: str, role: str = ACR_PULL) -> None:
        auth = self.emulator.mgmt_client(AuthorizationManagementClient)
        auth.role_assignments.create(
            scope,
            str(uuid.uuid4()),
            {
                "role_definition_id": f"{self.sub}/{ROLE_DEFINITIONS}/{role}",
                "principal_id": principal_id,
                "principal_type": "ServicePrincipal",
            },
        )

    def resolve(self, image: str, puller: str | None) -> dict:
        store = Store(self.emulator.settings.db_path)
        try:
            return resolve_image(SimpleNamespace(store=store), image, puller)
        finally:
            store.close()


@pytest.fixture
def registry(azure) -> Registry:
    return Registry(azure)


def workload_credential(emulator, principal_id: str, monkeypatch) -> ManagedIdentityCredential:
    """The identity's credential as a workload has it: the emulator's managed-identity endpoint
    (App Service protocol), with the secret the compute host binds to the workload."""
    store = Store(emulator.settings.db_path)
    try:
        secret = bind_workload_identity(SimpleNamespace(store=store), principal_id)
    finally:
        store.close()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{emulator.endpoint}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", secret)
    return ManagedIdentityCredential()


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# -- Entra principals ----------------------------------------------------------------------------


def test_owner_lists_catalog_tags_and_manifests_through_the_token_exchange(registry, azure):
    client = registry.client(azure.credential())
    assert sorted(client.list_repository_names()) == ["hello", "team/base/hello", "web"]
    tags = list(client.list_tag_properties("hello"))
    assert [t.name for t in tags] == ["latest", "v1", "v2"]
    assert {t.digest for t in tags} == {catalog.HELLO_WORLD.digest}
    assert (
        client.get_tag_properties("team/base/hello", "latest").digest == catalog.HELLO_WORLD.digest
    )
    props = client.get_repository_properties("hello")
    assert (props.tag_count, props.manifest_count) == (3, 1)
    manifest = client.get_manifest_properties("web", "latest")
    assert (manifest.digest, manifest.size_in_bytes) == (
        catalog.ACI_HELLOWORLD.digest,
        catalog.ACI_HELLOWORLD.size,
    )
    assert client.get_manifest("hello", "v1").digest == catalog.HELLO_WORLD.digest

    exchanges = [
        (r["method"], r["path"], r["status"])
        for r in azure.requests()
        if r["host"] == LOGIN and r["path"].startswith("/oauth2/")
    ]
    assert ("POST", "/oauth2/exchange", 200) in exchanges
    assert ("POST", "/oauth2/token", 200) in exchanges


def test_catalog_pages_follow_the_link_header(registry, azure):
    client = registry.client(azure.credential())
    assert list(client.list_repository_names(results_per_page=1)) == [
        "hello",
        "team/base/hello",
        "web",
    ]
    assert [t.name for t in client.list_tag_properties("hello", results_per_page=2)] == [
        "latest",
        "v1",
        "v2",
    ]


def test_identity_without_acr_pull_is_denied_until_granted(registry, azure, monkeypatch):
    principal_id = registry.identity("evalworker")
    client = registry.client(workload_credential(azure, principal_id, monkeypatch))
    with pytest.raises(ClientAuthenticationError) as err:
        list(client.list_repository_names())
    assert "authentication required" in str(err.value)
    with pytest.raises(ClientAuthenticationError):
        client.get_tag_properties("hello", "latest")
    with pytest.raises(ImagePullError) as pull:
        registry.resolve(f"{LOGIN}/hello:latest", principal_id)
    assert pull.value.reason == "unauthorized"
    assert "unauthorized: authentication required" in pull.value.message
    assert "AcrPull" in pull.value.message and "evalacr" in pull.value.message

    registry.grant(principal_id, registry.id)
    assert sorted(client.list_repository_names()) == ["hello", "team/base/hello", "web"]
    assert client.get_tag_properties("hello", "v2").digest == catalog.HELLO_WORLD.digest
    pulled = registry.resolve(f"{LOGIN}/hello:latest", principal_id)
    assert (pulled["digest"], pulled["size"]) == (
        catalog.HELLO_WORLD.digest,
        catalog.HELLO_WORLD.size,
    )
    # AcrPull reads but does not delete.
    with pytest.raises(ClientAuthenticationError):
        client.delete_repository("hello")
    assert client.get_repository_properties("hello").tag_count == 3


def test_acr_pull_at_the_resource_group_covers_its_registries(registry, azure, monkeypatch):
    principal_id = registry.identity("groupreader")
    registry.grant(principal_id, f"{registry.sub}/resourceGroups/acr")
    client = registry.client(workload_credential(azure, principal_id, monkeypatch))
    assert [t.name for t in client.list_tag_properties("web")] == ["latest"]
    assert registry.resolve(f"{LOGIN}/web", principal_id)["digest"] == catalog.ACI_HELLOWORLD.digest


def test_acr_pull_pulls_but_managing_the_registry_needs_arm_roles(registry, azure, monkeypatch):
    principal_id = registry.identity("puller")
    credential = workload_credential(azure, principal_id, monkeypatch)
    registry.grant(principal_id, registry.id)
    mgmt = azure.mgmt_client(ContainerRegistryManagementClient, credential=credential)
    with pytest.raises(HttpResponseError) as err:
        mgmt.registries.get("acr", "evalacr")
    assert (err.value.status_code, err.value.error.code) == (403, "AuthorizationFailed")
    assert list(mgmt.registries.list()) == []

    registry.grant(principal_id, registry.id, READER)
    assert mgmt.registries.get("acr", "evalacr").login_server == LOGIN
    assert [r.name for r in mgmt.registries.list()] == ["evalacr"]
    with pytest.raises(HttpResponseError) as err:
        mgmt.registries.list_credentials("acr", "evalacr")
    assert (err.value.status_code, err.value.error.code) == (403, "AuthorizationFailed")
    assert "registries/listCredentials/action" in err.value.error.message


def test_owner_deletes_a_repository(registry, azure):
    client = registry.client(azure.credential())
    client.delete_repository("team/base/hello")
    assert sorted(client.list_repository_names()) == ["hello", "web"]
    with pytest.raises(ImagePullError) as pull:
        registry.resolve(f"{LOGIN}/team/base/hello:latest", DEV_SP_OBJECT_ID)
    assert pull.value.reason == "not_found"


# -- the wire: challenges, admin user, anonymous pull -------------------------------------------


def test_anonymous_request_gets_acrs_bearer_challenge(registry):
    answer = requests.get(f"https://{LOGIN}/acr/v1/hello/_tags", timeout=10)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        f'Bearer realm="https://{LOGIN}/oauth2/token",service="{LOGIN}",'
        'scope="repository:hello:metadata_read"'
    )
    error = answer.json()["errors"][0]
    assert error["code"] == "UNAUTHORIZED"
    assert error["message"].startswith(
        "authentication required, visit https://aka.ms/acr/authorization"
    )


def test_admin_user_uses_basic_auth_only_when_enabled(registry):
    registry.mgmt.registries.begin_update("acr", "evalacr", {"admin_user_enabled": True}).result()
    password = registry.mgmt.registries.list_credentials("acr", "evalacr").passwords[0].value
    catalog_url = f"https://{LOGIN}/v2/_catalog"

    answer = requests.get(catalog_url, headers=basic("evalacr", password), timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"repositories": ["hello", "team/base/hello", "web"]}
    manifest = requests.head(
        f"https://{LOGIN}/v2/team/base/hello/manifests/latest",
        headers=basic("evalacr", password),
        timeout=10,
    )
    assert manifest.headers["Docker-Content-Digest"] == catalog.HELLO_WORLD.digest
    assert (
        requests.get(catalog_url, headers=basic("evalacr", "wrong"), timeout=10).status_code == 401
    )

    registry.mgmt.registries.begin_update("acr", "evalacr", {"admin_user_enabled": False}).result()
    assert (
        requests.get(catalog_url, headers=basic("evalacr", password), timeout=10).status_code == 401
    )


def test_docker_token_flow_with_admin_credentials(registry):
    registry.mgmt.registries.begin_update("acr", "evalacr", {"admin_user_enabled": True}).result()
    password = registry.mgmt.registries.list_credentials("acr", "evalacr").passwords[1].value
    token = requests.get(
        f"https://{LOGIN}/oauth2/token",
        params={"service": LOGIN, "scope": "repository:hello:pull"},
        headers=basic("evalacr", password),
        timeout=10,
    ).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    tags = requests.get(f"https://{LOGIN}/v2/hello/tags/list", headers=bearer, timeout=10)
    assert tags.json() == {"name": "hello", "tags": ["latest", "v1", "v2"]}
    # The token carries only the scope it was issued for.
    other = requests.get(f"https://{LOGIN}/v2/web/tags/list", headers=bearer, timeout=10)
    assert other.status_code == 401
    assert 'scope="repository:web:pull"' in other.headers["WWW-Authenticate"]


def test_anonymous_pull_only_when_the_registry_allows_it(registry):
    anonymous = registry.client(None)
    with pytest.raises(ClientAuthenticationError):
        list(anonymous.list_tag_properties("hello"))
    with pytest.raises(ImagePullError):
        registry.resolve(f"{LOGIN}/hello:latest", None)

    preview = registry.emulator.mgmt_client(
        ContainerRegistryManagementClient, api_version="2023-11-01-preview"
    )
    preview.registries.begin_update("acr", "evalacr", {"anonymous_pull_enabled": True}).result()
    assert [t.name for t in anonymous.list_tag_properties("hello")] == ["latest", "v1", "v2"]
    assert registry.resolve(f"{LOGIN}/hello:v1", None)["digest"] == catalog.HELLO_WORLD.digest
    # Anonymous clients pull; they do not list the catalog.
    with pytest.raises(ClientAuthenticationError):
        list(anonymous.list_repository_names())


# -- resolve_image -------------------------------------------------------------------------------


def test_public_images_resolve_without_credentials(registry):
    winarena = registry.resolve("windowsarena/winarena:latest", None)
    assert winarena["digest"] == catalog.WINARENA.digest
    assert 14e9 < winarena["size"] < 16e9
    assert winarena["image"] == "docker.io/windowsarena/winarena:latest"
    openmpi = registry.resolve("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest", None)
    assert openmpi["digest"] == catalog.AZUREML_OPENMPI.digest


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("windowsarena/winarena:no-such-tag", "not_found"),
        ("noregistry.azurecr.io/hello:latest", "registry_not_found"),
        (f"{LOGIN}/hello:no-such-tag", "not_found"),
        (f"{LOGIN}/missing:latest", "not_found"),
    ],
)
def test_unresolvable_images_say_why(registry, image, reason):
    with pytest.raises(ImagePullError) as err:
        registry.resolve(image, DEV_SP_OBJECT_ID)
    assert err.value.reason == reason
    assert image.split(":")[0] in err.value.message


# -- azure.azcollection --------------------------------------------------------------------------


def test_azcollection_tag_info_reads_the_imported_tags(registry, azure):
    env = {
        **os.environ,
        **azure.env,
        "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
    }
    completed = subprocess.run(
        [
            "ansible",
            "localhost",
            "-m",
            "azure.azcollection.azure_rm_containerregistrytag_info",
            "-a",
            "registry=evalacr repository_name=hello",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    document, _ = json.JSONDecoder().raw_decode(completed.stdout[completed.stdout.index("{") :])
    result = document["plays"][0]["tasks"][0]["hosts"]["localhost"]
    [repository] = result["repositories"]
    assert repository["name"] == "hello"
    assert [(t["name"], t["digest"]) for t in repository["tags"]] == [
        (tag, catalog.HELLO_WORLD.digest) for tag in ("latest", "v1", "v2")
    ]
