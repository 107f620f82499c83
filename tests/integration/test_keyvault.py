"""Key Vault through the real SDKs: vaults with azure-mgmt-keyvault 10.3.1 (2023-07-01), secrets
with azure-keyvault-secrets 4.11.3 (challenge authentication, RBAC data actions, access
policies), and a workload's managed identity (azure-identity's ManagedIdentityCredential)."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.secrets import SecretClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.resource import ResourceManagementClient

from localazure.identity.principals import DEV_SP_OBJECT_ID

pytestmark = pytest.mark.integration

GROUP, LOCATION = "vaults", "eastus"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"


@pytest.fixture
def kv(azure) -> KeyVaultManagementClient:
    azure.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
        GROUP, {"location": LOCATION}
    )
    return azure.mgmt_client(KeyVaultManagementClient)


def vault_parameters(azure, *, rbac: bool = True, policies: list | None = None) -> dict:
    return {
        "location": LOCATION,
        "properties": {
            "tenant_id": azure.settings.tenant_id,
            "sku": {"family": "A", "name": "standard"},
            "enable_rbac_authorization": rbac,
            "access_policies": policies or [],
        },
    }


def create_vault(azure, kv, name: str, **kwargs):
    return kv.vaults.begin_create_or_update(GROUP, name, vault_parameters(azure, **kwargs)).result()


def grant(azure, scope: str, principal_id: str, role: str) -> None:
    auth = azure.mgmt_client(AuthorizationManagementClient)
    definition = (
        f"/subscriptions/{azure.subscription_id}/providers/Microsoft.Authorization/"
        f"roleDefinitions/{role}"
    )
    auth.role_assignments.create(
        scope,
        str(uuid.uuid4()),
        {"role_definition_id": definition, "principal_id": principal_id},
    )


def secret_client(azure, name: str, credential=None) -> SecretClient:
    return SecretClient(f"https://{name}.vault.azure.net", credential or azure.credential())


def test_vault_lifecycle_with_soft_delete_recover_and_purge(azure, kv):
    vault = create_vault(azure, kv, "evals-kv")
    assert vault.type == "Microsoft.KeyVault/vaults"
    props = vault.properties
    assert props.vault_uri == "https://evals-kv.vault.azure.net/"
    assert props.enable_rbac_authorization is True
    assert (props.enable_soft_delete, props.soft_delete_retention_in_days) == (True, 90)
    assert props.enable_purge_protection is None
    assert props.sku.name == "standard"
    assert props.tenant_id == azure.settings.tenant_id
    assert kv.vaults.get(GROUP, "evals-kv").id == vault.id
    assert [v.name for v in kv.vaults.list_by_resource_group(GROUP)] == ["evals-kv"]
    assert [v.name for v in kv.vaults.list_by_subscription()] == ["evals-kv"]
    assert [v.name for v in kv.vaults.list()] == ["evals-kv"]
    taken = kv.vaults.check_name_availability({"name": "evals-kv"})
    assert (taken.name_available, taken.reason) == (False, "AlreadyExists")

    kv.vaults.delete(GROUP, "evals-kv")
    with pytest.raises(ResourceNotFoundError):
        kv.vaults.get(GROUP, "evals-kv")
    deleted = kv.vaults.get_deleted("evals-kv", LOCATION)
    assert deleted.properties.vault_id.lower() == vault.id.lower()
    assert deleted.properties.scheduled_purge_date > deleted.properties.deletion_date
    assert [d.name for d in kv.vaults.list_deleted()] == ["evals-kv"]
    # The name stays taken until the vault is recovered or purged.
    with pytest.raises(HttpResponseError, match="already exists in deleted state"):
        create_vault(azure, kv, "evals-kv")

    params = vault_parameters(azure)
    params["properties"]["create_mode"] = "recover"
    recovered = kv.vaults.begin_create_or_update(GROUP, "evals-kv", params).result()
    assert recovered.properties.vault_uri == "https://evals-kv.vault.azure.net/"
    assert list(kv.vaults.list_deleted()) == []

    kv.vaults.delete(GROUP, "evals-kv")
    kv.vaults.begin_purge_deleted("evals-kv", LOCATION).result()
    with pytest.raises(ResourceNotFoundError):
        kv.vaults.get_deleted("evals-kv", LOCATION)
    assert kv.vaults.check_name_availability({"name": "evals-kv"}).name_available


def test_bad_vault_requests_are_refused(azure, kv):
    with pytest.raises(HttpResponseError, match="VaultNameNotValid"):
        kv.vaults.begin_create_or_update(GROUP, "a--b", vault_parameters(azure)).result()
    params = vault_parameters(azure)
    params["properties"]["enable_soft_delete"] = False
    with pytest.raises(HttpResponseError, match="enableSoftDelete"):
        kv.vaults.begin_create_or_update(GROUP, "evals-kv", params).result()
    params = vault_parameters(azure)
    params["properties"]["tenant_id"] = str(uuid.uuid4())
    with pytest.raises(HttpResponseError, match="tenant"):
        kv.vaults.begin_create_or_update(GROUP, "evals-kv", params).result()
    assert list(kv.vaults.list_by_resource_group(GROUP)) == []


def test_owner_needs_a_data_role_in_rbac_mode(azure, kv):
    vault = create_vault(azure, kv, "evals-kv")
    client = secret_client(azure, "evals-kv")
    with pytest.raises(HttpResponseError) as denied:
        client.set_secret("openai-api-key", "value-1")
    assert denied.value.status_code == 403
    assert denied.value.error.code == "Forbidden"
    assert "Microsoft.KeyVault/vaults/secrets/setSecret/action" in denied.value.message

    grant(azure, vault.id, DEV_SP_OBJECT_ID, SECRETS_OFFICER)
    first = client.set_secret("openai-api-key", "value-1", content_type="text/plain")
    assert first.value == "value-1"
    assert (
        first.id
        == f"https://evals-kv.vault.azure.net/secrets/openai-api-key/{first.properties.version}"
    )


def test_secrets_set_get_versions_list_delete_recover_purge(azure, kv):
    vault = create_vault(azure, kv, "evals-kv")
    grant(azure, vault.id, DEV_SP_OBJECT_ID, SECRETS_OFFICER)
    client = secret_client(azure, "evals-kv")

    first = client.set_secret("openai-api-key", "value-1", tags={"run": "a"})
    second = client.set_secret("openai-api-key", "value-2")
    assert first.properties.version != second.properties.version
    assert client.get_secret("openai-api-key").value == "value-2"
    assert client.get_secret("openai-api-key", first.properties.version).value == "value-1"
    assert client.get_secret("OPENAI-API-KEY").value == "value-2"  # names are case-insensitive
    listed = list(client.list_properties_of_secrets())
    assert [p.name for p in listed] == ["openai-api-key"]
    assert all(p.version is None for p in listed)
    versions = {p.version for p in client.list_properties_of_secret_versions("openai-api-key")}
    assert versions == {first.properties.version, second.properties.version}
    updated = client.update_secret_properties(
        "openai-api-key", second.properties.version, content_type="text/plain"
    )
    assert updated.content_type == "text/plain"

    deleted = client.begin_delete_secret("openai-api-key").result()
    assert deleted.recovery_id == "https://evals-kv.vault.azure.net/deletedsecrets/openai-api-key"
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("openai-api-key")
    assert [d.name for d in client.list_deleted_secrets()] == ["openai-api-key"]
    with pytest.raises(ResourceExistsError, match="deleted but recoverable"):
        client.set_secret("openai-api-key", "value-3")

    client.begin_recover_deleted_secret("openai-api-key").result()
    assert client.get_secret("openai-api-key").value == "value-2"

    client.begin_delete_secret("openai-api-key").result()
    client.purge_deleted_secret("openai-api-key")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret("openai-api-key")
    assert client.set_secret("openai-api-key", "value-4").value == "value-4"

    with pytest.raises(HttpResponseError, match="invalid name"):
        client.set_secret("not_valid", "x")


def test_secrets_user_reads_through_its_managed_identity_and_cannot_write(azure, kv, monkeypatch):
    from azure.identity import ManagedIdentityCredential

    vault = create_vault(azure, kv, "evals-kv")
    grant(azure, vault.id, DEV_SP_OBJECT_ID, SECRETS_OFFICER)
    secret_client(azure, "evals-kv").set_secret("agent-key", "agent-value")

    identity = (
        azure.mgmt_client(ResourceManagementClient)
        .resources.begin_create_or_update_by_id(
            f"/subscriptions/{azure.subscription_id}/resourceGroups/{GROUP}/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/worker",
            "2023-01-31",
            {"location": LOCATION},
        )
        .result()
    )
    principal_id = identity.properties["principalId"]
    workload = azure.admin("POST", "workload-identities", {"principalIds": [principal_id]})
    for key, value in workload.items():
        monkeypatch.setenv(key, value)
    credential = ManagedIdentityCredential(client_id=identity.properties["clientId"])
    client = secret_client(azure, "evals-kv", credential)

    with pytest.raises(HttpResponseError) as denied:
        client.get_secret("agent-key")
    assert denied.value.status_code == 403

    grant(azure, vault.id, principal_id, SECRETS_USER)
    assert client.get_secret("agent-key").value == "agent-value"
    assert [p.name for p in client.list_properties_of_secrets()] == ["agent-key"]
    with pytest.raises(HttpResponseError) as denied:
        client.set_secret("agent-key", "overwritten")
    assert denied.value.status_code == 403


def test_access_policy_mode(azure, kv):
    create_vault(
        azure,
        kv,
        "policy-kv",
        rbac=False,
        policies=[
            {
                "tenant_id": azure.settings.tenant_id,
                "object_id": DEV_SP_OBJECT_ID,
                "permissions": {"secrets": ["get", "set"]},
            }
        ],
    )
    client = secret_client(azure, "policy-kv")
    client.set_secret("k", "v")
    assert client.get_secret("k").value == "v"
    with pytest.raises(HttpResponseError, match="does not have secrets list permission"):
        list(client.list_properties_of_secrets())


def test_the_challenge_comes_first_and_values_stay_out_of_the_log_and_the_store(azure, kv):
    import ssl
    import urllib.error
    import urllib.request

    vault = create_vault(azure, kv, "evals-kv")
    grant(azure, vault.id, DEV_SP_OBJECT_ID, SECRETS_OFFICER)
    context = ssl.create_default_context(cafile=str(azure.settings.ca_bundle))
    request = urllib.request.Request("https://evals-kv.vault.azure.net/secrets/x?api-version=7.4")
    with pytest.raises(urllib.error.HTTPError) as challenge:
        urllib.request.urlopen(request, context=context, timeout=10)
    assert challenge.value.code == 401
    header = challenge.value.headers["WWW-Authenticate"]
    assert header.startswith("Bearer authorization=")
    assert 'resource="https://vault.azure.net"' in header
    assert azure.settings.tenant_id in header

    canary = f"canary-{uuid.uuid4().hex}"
    since = azure.requests()[-1]["seq"]
    client = secret_client(azure, "evals-kv")
    client.set_secret("canary", canary)
    assert client.get_secret("canary").value == canary
    log = azure.requests(since)
    assert {(r["method"], r["status"]) for r in log if r["host"] == "evals-kv.vault.azure.net"} >= {
        ("PUT", 200),
        ("GET", 200),
    }
    assert canary not in str(log)
    for path in azure.settings.state_dir.glob("state.sqlite3*"):
        assert canary.encode() not in path.read_bytes(), path


def test_azcollection_modules_create_the_vault_and_its_secrets(azure, kv):
    from ansible_module import run_module

    tenant = azure.settings.tenant_id
    vault_args = (
        f"resource_group={GROUP} vault_name=evals-kv vault_tenant={tenant} "
        'sku=\'{"family": "A", "name": "standard"}\' enable_rbac_authorization=true'
    )
    created = run_module(azure, "azure.azcollection.azure_rm_keyvault", vault_args)
    assert created["changed"] is True
    again = run_module(azure, "azure.azcollection.azure_rm_keyvault", vault_args)
    assert again["changed"] is False
    info = run_module(
        azure, "azure.azcollection.azure_rm_keyvault_info", f"resource_group={GROUP} name=evals-kv"
    )
    (vault,) = info["keyvaults"]
    assert vault["vault_uri"] == "https://evals-kv.vault.azure.net/"
    assert vault["enable_rbac_authorization"] is True

    grant(azure, vault["id"], DEV_SP_OBJECT_ID, SECRETS_OFFICER)
    secret_args = f"keyvault_uri={vault['vault_uri']} secret_name=agent-key secret_value=v-1"
    stored = run_module(azure, "azure.azcollection.azure_rm_keyvaultsecret", secret_args)
    assert stored["changed"] is True
    assert (
        run_module(azure, "azure.azcollection.azure_rm_keyvaultsecret", secret_args)["changed"]
        is False
    )
    read = run_module(
        azure,
        "azure.azcollection.azure_rm_keyvaultsecret_info",
        f"vault_uri={vault['vault_uri']} name=agent-key",
    )
    assert [s["secret"] for s in read["secrets"]] == ["v-1"]
    removed = run_module(
        azure, "azure.azcollection.azure_rm_keyvaultsecret", f"{secret_args} state=absent"
    )
    assert removed["changed"] is True
