"""Azure Container Registry management through azure-mgmt-containerregistry 10.3.0: name
availability, the registry lifecycle with the SDK's pollers, Azure's validation errors, admin
credentials and ``importImage`` (catalog sources, missing sources, NoForce/Force, throttling)."""

from __future__ import annotations

import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient

from localazure.acr import catalog

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"


class Registries:
    """Clients and helpers for one test, with resource groups ``acr`` and ``other``."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.client = emulator.mgmt_client(ContainerRegistryManagementClient)
        self.ops = self.client.registries
        resources = emulator.mgmt_client(ResourceManagementClient)
        for group in ("acr", "other"):
            resources.resource_groups.create_or_update(group, {"location": "eastus"})
        self.resources = resources

    def create(self, name: str, group: str = "acr", **properties):
        body = {"location": "eastus", "sku": {"name": "Basic"}, **properties}
        return self.ops.begin_create(group, name, body).result()

    def import_image(self, registry: str, source: str, target: str, mode: str = "NoForce"):
        registry_uri, _, image = source.partition("/")
        return self.ops.begin_import_image(
            "acr",
            registry,
            {
                "source": {"registry_uri": registry_uri, "source_image": image},
                "target_tags": [target],
                "mode": mode,
            },
        ).result()

    def data_plane(self, registry: str) -> ContainerRegistryClient:
        return ContainerRegistryClient(
            f"https://{registry}.azurecr.io",
            self.emulator.credential(),
            audience="https://management.azure.com",
        )


@pytest.fixture
def acr(azure) -> Registries:
    return Registries(azure)


def error_of(err: pytest.ExceptionInfo[HttpResponseError]) -> tuple[int, str]:
    return err.value.status_code, err.value.error.code


# -- name availability ---------------------------------------------------------------------------


def test_name_availability_reports_valid_taken_and_invalid_names(acr):
    acr.create("takenreg", group="other")

    def check(name: str):
        return acr.ops.check_name_availability({"name": name, "type": REGISTRY_TYPE})

    assert check("freshname01").name_available is True
    taken = check("TakenReg")
    assert (taken.name_available, taken.reason) == (False, "AlreadyExists")
    assert "takenreg" in taken.message.lower()
    for invalid in ("abcd", "has-hyphen", "x" * 51):
        status = check(invalid)
        assert (status.name_available, status.reason) == (False, "Invalid")
        assert "alpha numeric" in status.message


# -- lifecycle -----------------------------------------------------------------------------------


def test_create_get_list_update_and_delete_a_registry(acr):
    created = acr.create("evalsRegistry", tags={"team": "eval"})
    assert created.id.endswith(
        "/resourceGroups/acr/providers/Microsoft.ContainerRegistry/registries/evalsRegistry"
    )
    assert (created.type, created.location) == (REGISTRY_TYPE, "eastus")
    assert (created.sku.name, created.sku.tier) == ("Basic", "Basic")
    assert created.login_server == "evalsregistry.azurecr.io"
    assert created.provisioning_state == "Succeeded"
    assert created.admin_user_enabled is False
    assert created.public_network_access == "Enabled"
    assert created.creation_date is not None and created.system_data.created_at is not None

    fetched = acr.ops.get("acr", "EVALSREGISTRY")
    assert (fetched.id, fetched.tags) == (created.id, {"team": "eval"})

    again = acr.create("evalsRegistry", tags={"team": "eval"})
    assert (again.id, again.creation_date) == (created.id, created.creation_date)
    assert [r.name for r in acr.ops.list_by_resource_group("acr")] == ["evalsRegistry"]

    acr.create("otherRegistry", group="other")
    assert sorted(r.name for r in acr.ops.list()) == ["evalsRegistry", "otherRegistry"]

    updated = acr.ops.begin_update(
        "acr",
        "evalsRegistry",
        {"sku": {"name": "Standard"}, "admin_user_enabled": True, "tags": {"team": "infra"}},
    ).result()
    assert (updated.sku.name, updated.admin_user_enabled, updated.tags) == (
        "Standard",
        True,
        {"team": "infra"},
    )
    assert acr.ops.get("acr", "evalsRegistry").sku.tier == "Standard"

    acr.ops.begin_delete("acr", "evalsRegistry").result()
    with pytest.raises(ResourceNotFoundError):
        acr.ops.get("acr", "evalsRegistry")
    assert [r.name for r in acr.ops.list()] == ["otherRegistry"]
    # The name is free again once the registry is gone.
    assert acr.ops.check_name_availability(
        {"name": "evalsRegistry", "type": REGISTRY_TYPE}
    ).name_available


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        (
            "bad-name",
            {"location": "eastus", "sku": {"name": "Basic"}},
            (400, "ResourceNameInvalid"),
        ),
        ("abc", {"location": "eastus", "sku": {"name": "Basic"}}, (400, "ResourceNameInvalid")),
        ("goodname1", {"location": "eastus", "sku": {"name": "Gold"}}, (400, "InvalidSkuName")),
        (
            "goodname1",
            {"location": "eastus", "sku": {"name": "Classic"}},
            (400, "ClassicSkuDeprecated"),
        ),
        (
            "goodname1",
            {"location": "moon", "sku": {"name": "Basic"}},
            (400, "LocationNotAvailableForResourceType"),
        ),
    ],
)
def test_invalid_registries_are_refused_with_azures_codes(acr, name, body, expected):
    with pytest.raises(HttpResponseError) as err:
        acr.ops.begin_create("acr", name, body).result()
    assert error_of(err) == expected
    assert list(acr.ops.list()) == []


def test_registry_names_are_global_across_resource_groups(acr):
    acr.create("sharedname", group="other")
    with pytest.raises(ResourceExistsError) as err:
        acr.create("SharedName")
    assert error_of(err) == (409, "AlreadyInUse")
    assert "sharedname.azurecr.io is already in use" in err.value.error.message


def test_missing_registry_and_group_answer_404(acr):
    with pytest.raises(ResourceNotFoundError) as err:
        acr.ops.get("acr", "nosuchregistry")
    assert err.value.error.code == "ResourceNotFound"
    with pytest.raises(ResourceNotFoundError) as err:
        acr.ops.get("nosuchgroup", "nosuchregistry")
    assert err.value.error.code == "ResourceGroupNotFound"


# -- credentials ---------------------------------------------------------------------------------


def test_credentials_need_the_admin_user_and_can_be_regenerated(acr):
    acr.create("credsreg")
    with pytest.raises(HttpResponseError) as err:
        acr.ops.list_credentials("acr", "credsreg")
    assert error_of(err) == (400, "UnAuthorizedForCredentialOperations")
    assert "admin user is disabled" in err.value.error.message

    acr.ops.begin_update("acr", "credsreg", {"admin_user_enabled": True}).result()
    creds = acr.ops.list_credentials("acr", "credsreg")
    assert creds.username == "credsreg"
    first = {p.name: p.value for p in creds.passwords}
    assert sorted(first) == ["password", "password2"]
    assert all(len(value) == 52 for value in first.values())
    assert first["password"] != first["password2"]

    regenerated = acr.ops.regenerate_credential("acr", "credsreg", {"name": "password2"})
    second = {p.name: p.value for p in regenerated.passwords}
    assert second["password"] == first["password"]
    assert second["password2"] != first["password2"]
    listed = acr.ops.list_credentials("acr", "credsreg")
    assert {p.name: p.value for p in listed.passwords} == second


# -- import --------------------------------------------------------------------------------------


def test_import_copies_the_winarena_image_from_docker_hub(acr):
    acr.create("importreg")
    acr.import_image("importreg", "docker.io/windowsarena/winarena:latest", "winarena:latest")

    client = acr.data_plane("importreg")
    assert list(client.list_repository_names()) == ["winarena"]
    tag = client.get_tag_properties("winarena", "latest")
    assert tag.digest == catalog.WINARENA.digest
    manifest = client.get_manifest_properties("winarena", "latest")
    assert manifest.size_in_bytes == catalog.WINARENA.size > 14_000_000_000
    assert (manifest.operating_system, manifest.architecture) == ("linux", "amd64")
    downloaded = client.get_manifest("winarena", tag.digest)
    assert downloaded.digest == catalog.WINARENA.digest
    assert downloaded.manifest["config"]["digest"] == catalog.WINARENA.config_digest


def test_import_of_a_missing_source_fails_the_operation(acr):
    acr.create("importreg")
    with pytest.raises(HttpResponseError) as err:
        acr.import_image("importreg", "docker.io/windowsarena/no-such-image:latest", "x:latest")
    assert err.value.error.code == "InvalidParameters"
    assert "windowsarena/no-such-image:latest not found" in err.value.error.message
    assert list(acr.data_plane("importreg").list_repository_names()) == []


def test_import_without_force_refuses_an_existing_tag_and_force_overwrites_it(acr):
    acr.create("importreg")
    acr.import_image("importreg", "docker.io/library/hello-world:latest", "base:v1")
    with pytest.raises(ResourceExistsError) as err:
        acr.import_image(
            "importreg", "mcr.microsoft.com/azuredocs/aci-helloworld:latest", "base:v1"
        )
    assert error_of(err) == (409, "Conflict")
    assert "base:v1 already exists in target registry" in err.value.error.message
    client = acr.data_plane("importreg")
    assert client.get_tag_properties("base", "v1").digest == catalog.HELLO_WORLD.digest

    acr.import_image(
        "importreg", "mcr.microsoft.com/azuredocs/aci-helloworld:latest", "base:v1", mode="Force"
    )
    assert client.get_tag_properties("base", "v1").digest == catalog.ACI_HELLOWORLD.digest
    # The overwritten manifest stays in the repository, untagged, as in ACR.
    digests = {m.digest: m.tags for m in client.list_manifest_properties("base")}
    assert digests == {catalog.ACI_HELLOWORLD.digest: ["v1"], catalog.HELLO_WORLD.digest: []}


def test_import_from_another_emulated_registry_by_resource_id(acr):
    source = acr.create("sourcereg")
    acr.create("targetreg")
    acr.import_image("sourcereg", "docker.io/library/hello-world:latest", "hello:1")
    acr.ops.begin_import_image(
        "acr",
        "targetreg",
        {
            "source": {"resource_id": source.id, "source_image": "hello:1"},
            "target_tags": ["copied:1"],
        },
    ).result()
    tag = acr.data_plane("targetreg").get_tag_properties("copied", "1")
    assert tag.digest == catalog.HELLO_WORLD.digest


def test_throttled_import_is_retried_by_the_sdk_and_succeeds(acr, azure):
    acr.create("importreg")
    azure.add_fault(method="POST", path="/importImage$", status=429, retry_after=1, times=1)
    before = len(azure.requests())
    acr.import_image("importreg", "docker.io/library/hello-world:latest", "hello:latest")
    posts = [
        r["status"]
        for r in azure.requests()[before:]
        if r["method"] == "POST" and r["path"].endswith("/importImage")
    ]
    assert posts == [429, 202]
    tag = acr.data_plane("importreg").get_tag_properties("hello", "latest")
    assert tag.digest == catalog.HELLO_WORLD.digest


def test_deleting_the_resource_group_drops_the_registry_and_its_content(acr):
    acr.create("groupreg", group="other")
    acr.ops.begin_import_image(
        "other",
        "groupreg",
        {
            "source": {"registry_uri": "docker.io", "source_image": "library/hello-world:latest"},
            "target_tags": ["hello:latest"],
        },
    ).result()
    acr.resources.resource_groups.begin_delete("other").result()
    assert list(acr.ops.list()) == []

    acr.resources.resource_groups.create_or_update("other", {"location": "eastus"})
    acr.create("groupreg", group="other")
    assert list(acr.data_plane("groupreg").list_repository_names()) == []
