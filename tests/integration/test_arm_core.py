"""ARM core through azure-mgmt-resource: resource groups, errors, long-running operations,
the batch endpoint, fault injection, the request log, and state across a restart."""

from __future__ import annotations

import json
import os

import pytest
import requests
from ansible_module import run_module
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource import ResourceManagementClient, SubscriptionClient

from localazure.testing import RunningEmulator


@pytest.fixture
def resources(azure):
    return azure.mgmt_client(ResourceManagementClient)


def test_cloud_metadata_in_both_shapes(azure):
    legacy = requests.get(
        f"{azure.endpoint}/metadata/endpoints", params={"api-version": "2015-01-01"}, timeout=10
    ).json()
    assert legacy["authentication"]["loginEndpoint"] == azure.endpoint
    assert "https://management.azure.com/" in legacy["authentication"]["audiences"]
    current = requests.get(
        f"{azure.endpoint}/metadata/endpoints", params={"api-version": "2022-09-01"}, timeout=10
    ).json()
    assert current[0]["resourceManager"] == azure.endpoint + "/"
    assert current[0]["suffixes"]["acrLoginServer"] == ".azurecr.io"


def test_subscription_is_listed(azure):
    client = SubscriptionClient(
        azure.credential(),
        base_url=azure.endpoint,
        credential_scopes=[azure.endpoint + "/.default"],
    )
    subscriptions = list(client.subscriptions.list())
    assert [s.subscription_id for s in subscriptions] == [azure.subscription_id]
    assert "eastus" in {
        loc.name for loc in client.subscriptions.list_locations(azure.subscription_id)
    }


def test_resource_group_lifecycle(resources):
    created = resources.resource_groups.create_or_update(
        "rg-life", {"location": "East US", "tags": {"a": "1"}}
    )
    assert (created.name, created.location, created.tags) == ("rg-life", "eastus", {"a": "1"})
    assert resources.resource_groups.check_existence("RG-LIFE") is True
    again = resources.resource_groups.create_or_update(
        "rg-life", {"location": "eastus", "tags": {"b": "2"}}
    )
    assert again.tags == {"b": "2"}
    assert [g.name for g in resources.resource_groups.list()] == ["rg-life"]
    resources.resource_groups.begin_delete("rg-life", polling_interval=0).result()
    assert resources.resource_groups.check_existence("rg-life") is False


def test_missing_group_has_azures_error_code(resources):
    with pytest.raises(ResourceNotFoundError) as err:
        resources.resource_groups.get("nope")
    assert err.value.error.code == "ResourceGroupNotFound"


def test_bad_location_and_location_change_are_refused(resources):
    with pytest.raises(HttpResponseError) as err:
        resources.resource_groups.create_or_update("rg-bad", {"location": "atlantis"})
    assert err.value.error.code == "LocationNotAvailableForResourceType"
    resources.resource_groups.create_or_update("rg-move", {"location": "eastus"})
    with pytest.raises(HttpResponseError) as err:
        resources.resource_groups.create_or_update("rg-move", {"location": "westeurope"})
    assert err.value.status_code == 409
    assert err.value.error.code == "InvalidResourceGroupLocation"


def test_every_answer_has_a_request_id(azure, resources):
    resources.resource_groups.create_or_update("rg-id", {"location": "eastus"})
    response = requests.get(f"{azure.endpoint}/subscriptions", timeout=10)
    assert response.status_code == 401
    assert response.headers["x-ms-request-id"]


def test_throttling_with_retry_after_is_retried_by_the_sdk(azure, resources):
    azure.add_fault(
        method="PUT", path="/resourcegroups/rg-throttled", status=429, retry_after=1, times=2
    )
    group = resources.resource_groups.create_or_update("rg-throttled", {"location": "eastus"})
    assert group.name == "rg-throttled"
    puts = [
        r
        for r in azure.requests()
        if r["method"] == "PUT" and r["path"].lower().endswith("/resourcegroups/rg-throttled")
    ]
    assert [r["status"] for r in puts] == [429, 429, 201]
    assert [r["fault"] is not None for r in puts] == [True, True, False]


def test_service_unavailable_exhausts_retries_with_the_error(azure, resources):
    azure.add_fault(method="GET", path="/resourcegroups/rg-down$", status=503, times=100)
    resources_no_retry = azure.mgmt_client(
        ResourceManagementClient, retry_total=1, retry_backoff_factor=0.01
    )
    with pytest.raises(HttpResponseError) as err:
        resources_no_retry.resource_groups.get("rg-down")
    assert err.value.status_code == 503
    assert err.value.error.code == "ServiceUnavailable"


def test_batch_endpoint_runs_each_request(azure, resources):
    resources.resource_groups.create_or_update("rg-batch", {"location": "eastus"})
    token = azure.credential().get_token(azure.endpoint + "/.default").token
    sub = azure.subscription_id
    before = azure.requests()[-1]["seq"]
    response = requests.post(
        f"{azure.endpoint}/batch",
        params={"api-version": "2015-11-01"},
        headers={"Authorization": f"Bearer {token}"},
        json={
            "requests": [
                {
                    "httpMethod": "GET",
                    "url": f"/subscriptions/{sub}/resourcegroups/rg-batch?api-version=2022-09-01",
                    "name": "a",
                },
                {
                    "httpMethod": "GET",
                    "url": f"/subscriptions/{sub}/resourcegroups/nope?api-version=2022-09-01",
                    "name": "b",
                },
                {
                    "httpMethod": "PUT",
                    "url": f"/subscriptions/{sub}/resourcegroups/rg-inner?api-version=2022-09-01",
                    "content": {"location": "eastus"},
                    "name": "c",
                },
            ]
        },
        timeout=10,
    ).json()["responses"]
    assert [(r["name"], r["httpStatusCode"]) for r in response] == [
        ("a", 200),
        ("b", 404),
        ("c", 201),
    ]
    assert response[0]["content"]["name"] == "rg-batch"
    assert response[1]["content"]["error"]["code"] == "ResourceGroupNotFound"
    # Each request inside the batch is in the request log on its own, then the envelope.
    logged = [
        (r["method"], r["path"].rsplit("/", 1)[-1], r["status"])
        for r in azure.requests(since=before)
        if "/oauth2/" not in r["path"]
    ]
    assert logged == [
        ("GET", "rg-batch", 200),
        ("GET", "nope", 404),
        ("PUT", "rg-inner", 201),
        ("POST", "batch", 200),
    ]


def test_request_log_never_holds_credentials(azure):
    secret = azure.env["AZURE_CLIENT_SECRET"]
    azure.credential().get_token("https://management.azure.com/.default")
    log = azure.requests()
    assert any(r["path"].endswith("/oauth2/v2.0/token") for r in log)
    assert secret not in repr(log)


def test_reading_the_request_log_to_its_end_gets_there(azure):
    azure.credential().get_token("https://management.azure.com/.default")
    last = azure.requests()[-1]["seq"]
    # A reader pages until a page is empty: its own reads must not be the next page.
    assert azure.requests(since=last) == []
    assert azure.requests(since=last) == []


def test_state_survives_a_restart(tmp_path, monkeypatch):
    for name in RunningEmulator(tmp_path).env:
        monkeypatch.setenv(name, os.environ.get(name, ""))
    emulator = RunningEmulator(tmp_path / "state").start()
    try:
        emulator.activate()
        emulator.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
            "rg-durable", {"location": "eastus"}
        )
        emulator.restart()
        emulator.activate()
        client = emulator.mgmt_client(ResourceManagementClient)
        assert client.resource_groups.get("rg-durable").location == "eastus"
    finally:
        emulator.stop()


# -- resource providers and regions -------------------------------------------------------------


def test_providers_report_what_is_emulated(resources):
    providers = {p.namespace: p for p in resources.providers.list()}
    assert len(providers) > 300
    registered = {ns for ns, p in providers.items() if p.registration_state == "Registered"}
    assert registered == {
        "Microsoft.Authorization",
        "Microsoft.Batch",
        "Microsoft.Compute",
        "Microsoft.ContainerInstance",
        "Microsoft.ContainerRegistry",
        "Microsoft.Insights",
        "Microsoft.KeyVault",
        "Microsoft.MachineLearningServices",
        "Microsoft.ManagedIdentity",
        "Microsoft.Network",
        "Microsoft.Resources",
        "Microsoft.Storage",
    }
    assert providers["Microsoft.Sql"].registration_state == "NotRegistered"
    registries = resources.providers.get("Microsoft.ContainerRegistry").resource_types
    by_type = {t.resource_type: t for t in registries}
    assert "West US" in by_type["registries"].locations
    assert "2023-07-01" in by_type["registries"].api_versions
    with pytest.raises(HttpResponseError) as err:
        resources.providers.get("Microsoft.NoSuchThing")
    assert (err.value.status_code, err.value.error.code) == (400, "InvalidResourceNamespace")


def test_unregistered_namespaces_refuse_every_request(azure, resources):
    resources.resource_groups.create_or_update("vms", {"location": "eastus"})
    base = f"/subscriptions/{azure.subscription_id}/resourceGroups/vms/providers/Microsoft.Sql"
    for method, path in (
        ("GET", f"{base}/servers/sql1"),
        ("GET", f"{base}/servers"),
        ("DELETE", f"{base}/servers/sql1"),
    ):
        with pytest.raises(HttpResponseError) as err:
            getattr(resources.resources, "get_by_id" if method == "GET" else "begin_delete_by_id")(
                path, "2024-07-01"
            )
        assert (err.value.status_code, err.value.error.code) == (
            409,
            "MissingSubscriptionRegistration",
        )
        assert "Microsoft.Sql" in err.value.error.message
    # Implemented providers answer lists of an empty group with 200 and an empty value.
    listed = resources.resources.get_by_id(
        f"/subscriptions/{azure.subscription_id}/resourceGroups/vms/providers"
        "/Microsoft.ContainerRegistry/registries",
        "2023-07-01",
    )
    assert listed.additional_properties.get("value", []) == []


def test_azcollection_info_on_an_unregistered_namespace_fails(azure, resources):
    resources.resource_groups.create_or_update("vms", {"location": "eastus"})
    result = run_module(
        azure,
        "azure.azcollection.azure_rm_resource_info",
        json.dumps(
            {
                "resource_group": "vms",
                "provider": "Sql",
                "resource_type": "servers",
                "api_version": "2023-08-01",
            }
        ),
        check=False,
    )
    assert result.get("failed") is True
    assert "MissingSubscriptionRegistration" in json.dumps(result)


def test_registry_in_westus_is_accepted_and_regions_come_from_one_catalogue(azure, resources):
    resources.resource_groups.create_or_update("west", {"location": "westus"})
    acr = azure.mgmt_client(ContainerRegistryManagementClient)
    created = acr.registries.begin_create(
        "west", "westacr", {"location": "westus", "sku": {"name": "Basic"}}
    ).result()
    assert created.location == "westus"
    client = SubscriptionClient(
        azure.credential(),
        base_url=azure.endpoint,
        credential_scopes=[azure.endpoint + "/.default"],
    )
    locations = {loc.name for loc in client.subscriptions.list_locations(azure.subscription_id)}
    assert {"westus", "eastus", "swedencentral"} <= locations
    with pytest.raises(HttpResponseError) as err:
        acr.registries.begin_create(
            "west", "moonacr", {"location": "moon", "sku": {"name": "Basic"}}
        )
    assert err.value.error.code == "LocationNotAvailableForResourceType"
