"""Azure ML resources through azure-ai-ml 1.35.2 (MLClient) and generic ARM requests
(azure-mgmt-resource): workspaces with their identity and discovery URL, AmlCompute clusters
(sizes, usages, quota, security type), and environment versions."""

from __future__ import annotations

import time

import pytest
import requests
from azure.ai.ml.entities import AmlCompute, BuildContext, Environment
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.resource import ResourceManagementClient

from localazure.core.store import Store
from localazure.identity import principals

RG, WS = "ml", "evals"
WORKSPACE_API = "2024-10-01"
COMPUTE_API = "2023-08-01-preview"
ENVIRONMENT_API = "2023-04-01-preview"


class Workspace:
    """Workspace ``evals`` in group ``ml``, created with a minimal ARM PUT."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.resources = emulator.mgmt_client(ResourceManagementClient)
        self.resources.resource_groups.create_or_update(RG, {"location": "eastus"})
        self.id = (
            f"/subscriptions/{emulator.subscription_id}/resourceGroups/{RG}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{WS}"
        )
        self.created = self.resources.resources.begin_create_or_update_by_id(
            self.id, WORKSPACE_API, {"location": "eastus", "identity": {"type": "SystemAssigned"}}
        ).result()
        self.client = emulator.ml_client(RG, WS)

    def principal(self, object_id: str) -> dict | None:
        store = Store(self.emulator.settings.db_path)
        try:
            return store.get(principals.KIND, object_id)
        finally:
            store.close()

    def cluster(self, name: str = "cpu", **settings) -> AmlCompute:
        spec = {"size": "Standard_D4_v3", "max_instances": 2, "idle_time_before_scale_down": 60}
        spec.update(settings)
        return self.client.compute.begin_create_or_update(AmlCompute(name=name, **spec)).result()

    def raw_compute(self, name: str) -> dict:
        return self.resources.resources.get_by_id(f"{self.id}/computes/{name}", COMPUTE_API)


@pytest.fixture
def ws(azure) -> Workspace:
    return Workspace(azure)


def wire(entity) -> dict:
    """The wire fields azure-ai-ml 1.35.2 leaves on VmSize and Usage entities (it copies the
    REST model's ``as_dict()``, which has the wire names, into the entity)."""
    return vars(entity)


# -- workspaces -----------------------------------------------------------------------------------


def test_workspace_has_a_system_assigned_identity_and_a_discovery_url(ws, azure):
    workspace = ws.client.workspaces.get(WS)
    principal_id = workspace.identity.principal_id
    assert workspace.identity.type == "system_assigned"
    assert principal_id == ws.created.identity.principal_id
    assert ws.principal(principal_id)["type"] == "ManagedIdentity"
    assert workspace.location == "eastus" and workspace.id == ws.id
    discovery = requests.get(workspace.discovery_url, timeout=10).json()
    assert discovery["api"] == azure.endpoint and discovery["history"] == azure.endpoint
    assert [w.name for w in ws.client.workspaces.list()] == [WS]


def test_deleting_the_workspace_deletes_its_identity_and_its_resources(ws):
    ws.cluster()
    principal_id = ws.created.identity.principal_id
    ws.resources.resources.begin_delete_by_id(ws.id, WORKSPACE_API).result()
    assert ws.principal(principal_id) is None
    with pytest.raises(ResourceNotFoundError):
        ws.resources.resources.get_by_id(f"{ws.id}/computes/cpu", COMPUTE_API)
    with pytest.raises(ResourceNotFoundError):
        ws.resources.resources.get_by_id(ws.id, WORKSPACE_API)


def identity(ws, name: str) -> dict:
    rid = (
        f"/subscriptions/{ws.emulator.subscription_id}/resourceGroups/{RG}/providers/"
        f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}"
    )
    created = ws.resources.resources.begin_create_or_update_by_id(
        rid, "2023-01-31", {"location": "eastus"}
    ).result()
    return {"id": created.id, "principalId": created.properties["principalId"]}


@pytest.mark.parametrize("kind", ["SystemAssigned,UserAssigned", "UserAssigned"])
def test_workspace_accepts_user_assigned_identities(ws, kind):
    uai = identity(ws, "ws-identity")
    other = ws.id.replace(WS, "other")
    poller = ws.resources.resources.begin_create_or_update_by_id(
        other,
        WORKSPACE_API,
        {
            "location": "eastus",
            "identity": {"type": kind, "userAssignedIdentities": {uai["id"]: {}}},
        },
    )
    assert poller._polling_method._initial_response.http_response.status_code in (200, 202)
    created = poller.result()
    assert created.identity.type == kind
    assert created.identity.user_assigned_identities[uai["id"]].principal_id == uai["principalId"]
    assert bool(created.identity.principal_id) == kind.startswith("SystemAssigned")
    workspace = ws.client.workspaces.get("other")
    assert uai["id"] in workspace.identity.user_assigned_identities[0].resource_id or any(
        u.resource_id == uai["id"] for u in workspace.identity.user_assigned_identities
    )


def test_workspace_get_carries_the_keys_azure_returns(ws):
    body = ws.resources.resources.get_by_id(ws.id, WORKSPACE_API).properties
    for key in ("encryption", "managedNetwork", "privateEndpointConnections", "discoveryUrl"):
        assert key in body
    assert body["managedNetwork"]["isolationMode"] == "Disabled"
    assert body["privateEndpointConnections"] == []


def test_workspace_with_an_unsupported_identity_type_is_refused(ws):
    with pytest.raises(HttpResponseError) as err:
        ws.resources.resources.begin_create_or_update_by_id(
            ws.id.replace(WS, "other"),
            WORKSPACE_API,
            {"location": "eastus", "identity": {"type": "None"}},
        )
    assert err.value.error.code == "InvalidIdentityType"
    with pytest.raises(HttpResponseError) as err:
        ws.resources.resources.begin_create_or_update_by_id(
            ws.id.replace(WS, "other"),
            WORKSPACE_API,
            {"location": "eastus", "identity": {"type": "UserAssigned"}},
        )
    assert err.value.error.code == "InvalidIdentityType"
    assert [w.name for w in ws.client.workspaces.list()] == [WS]


# -- compute clusters -----------------------------------------------------------------------------


def test_cluster_create_get_list_and_delete(ws):
    created = ws.cluster("cpu", tier="low_priority", idle_time_before_scale_down=300)
    assert created.provisioning_state == "Succeeded"
    cluster = ws.client.compute.get("cpu")
    assert (cluster.size, cluster.tier, cluster.min_instances, cluster.max_instances) == (
        "STANDARD_D4_V3",
        "low_priority",
        0,
        2,
    )
    assert cluster.idle_time_before_scale_down == 300
    assert [c.name for c in ws.client.compute.list()] == ["cpu"]
    live = ws.raw_compute("cpu").properties["properties"]
    assert (live["currentNodeCount"], live["allocationState"]) == (0, "Steady")
    assert live["nodeStateCounts"]["idleNodeCount"] == 0
    assert live["propertyBag"] == {"securityType": "Standard"}
    ws.client.compute.begin_delete("cpu").result()
    assert list(ws.client.compute.list()) == []
    with pytest.raises(ResourceNotFoundError):
        ws.client.compute.get("cpu")


def test_minimum_nodes_are_allocated_and_counted_in_usage(ws, azure):
    azure.admin("PUT", "ml/settings", {"time_scale": 0.05})
    ws.cluster("warm", min_instances=1)
    live = ws.raw_compute("warm").properties["properties"]
    assert (live["targetNodeCount"], live["allocationState"]) == (1, "Resizing")
    deadline = time.monotonic() + 5
    while live["nodeStateCounts"]["idleNodeCount"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        live = ws.raw_compute("warm").properties["properties"]
    assert (live["currentNodeCount"], live["allocationState"]) == (1, "Steady")
    usage = {wire(u)["name"]["value"]: wire(u) for u in ws.client.compute.list_usage()}
    assert usage["standardDv3Family"]["currentValue"] == 4
    assert usage["standardDv3Family"]["limit"] == 100
    assert usage["Total Cluster Dedicated Regional vCPUs"]["currentValue"] == 4
    (node,) = azure.admin("GET", "ml/nodes?compute=warm")["value"]
    assert (node["vm_size"], node["vcpus"], node["released_at"]) == ("Standard_D4_v3", 4, None)


def test_sizes_carry_vcpus_memory_family_and_prices(ws):
    sizes = {s.name: wire(s) for s in ws.client.compute.list_sizes()}
    d4 = sizes["Standard_D4_v3"]
    assert (d4["vCPUs"], d4["memoryGB"], d4["family"]) == (4, 16, "standardDv3Family")
    prices = {p["vmTier"]: p["retailPrice"] for p in d4["estimatedVMPrices"]["values"]}
    assert prices["Standard"] == 0.192 and prices["LowPriority"] == pytest.approx(0.0384)
    assert wire_price(sizes["Standard_D4s_v5"]) == 0.208
    assert {"Standard_E2s_v3", "Standard_D8_v3", "Standard_D2_v3", "Standard_B2s"} <= set(sizes)
    assert sizes["Standard_B2s"]["lowPriorityCapable"] is False


def wire_price(size: dict) -> float:
    (standard,) = [p for p in size["estimatedVMPrices"]["values"] if p["vmTier"] == "Standard"]
    return standard["retailPrice"]


def test_unknown_vm_size_is_refused_before_anything_is_created(ws):
    with pytest.raises(HttpResponseError) as err:
        ws.cluster("odd", size="Standard_Imaginary_v9")
    assert err.value.error.code == "VMSizeNotSupported"
    assert "Standard_Imaginary_v9" in err.value.error.message
    with pytest.raises(ResourceNotFoundError):
        ws.client.compute.get("odd")


def test_cluster_larger_than_the_family_quota_is_refused(ws, azure):
    azure.admin("PUT", "ml/quota", {"families": {"standardDv3Family": 8}})
    with pytest.raises(HttpResponseError) as err:
        ws.cluster("big", max_instances=3)
    assert err.value.error.code == "QuotaExceeded"
    assert err.value.error.message.startswith(
        "Operation results in exceeding quota limits of Core. Maximum allowed: 8, "
        "Current in use: 0, Additional requested: 12."
    )
    usage = {wire(u)["name"]["value"]: wire(u) for u in ws.client.compute.list_usage()}
    assert usage["standardDv3Family"]["limit"] == 8
    assert ws.cluster("fits", max_instances=2).max_instances == 2


def test_vm_size_of_an_existing_cluster_cannot_change(ws):
    ws.cluster("cpu")
    with pytest.raises(HttpResponseError) as err:
        ws.cluster("cpu", size="Standard_D8_v3")
    assert err.value.error.code == "PropertyChangeNotAllowed"
    assert ws.cluster("cpu", max_instances=4).max_instances == 4


def test_security_type_is_kept_in_the_property_bag(ws):
    ws.resources.resources.begin_create_or_update_by_id(
        f"{ws.id}/computes/tl",
        COMPUTE_API,
        {
            "location": "eastus",
            "properties": {
                "computeType": "AmlCompute",
                "properties": {
                    "vmSize": "Standard_D4s_v5",
                    "scaleSettings": {"maxNodeCount": 1},
                    "propertyBag": {"securityType": "trustedlaunch"},
                },
            },
        },
    ).result()
    props = ws.raw_compute("tl").properties["properties"]
    assert props["propertyBag"]["securityType"] == "TrustedLaunch"
    assert props["scaleSettings"]["nodeIdleTimeBeforeScaleDown"] == "PT120S"


# -- environments ---------------------------------------------------------------------------------


def test_environment_versions_are_numbered_and_immutable(ws):
    image = "openadaptevals.azurecr.io/winarena:latest"
    first = ws.client.environments.create_or_update(Environment(name="waa", image=image))
    again = ws.client.environments.create_or_update(Environment(name="waa", image=image))
    assert (first.version, again.version, first.image) == ("1", "1", image)
    newer = ws.client.environments.create_or_update(
        Environment(name="waa", image="openadaptevals.azurecr.io/winarena:v2")
    )
    assert newer.version == "2"
    assert ws.client.environments.get("waa", "1").image == image
    with pytest.raises(HttpResponseError) as err:
        ws.client.environments.create_or_update(
            Environment(name="waa", version="1", image="docker.io/library/hello-world:latest")
        )
    assert err.value.status_code == 409


def test_environment_with_a_build_context_produces_an_image_in_the_workspace_registry(ws):
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    acr = ws.emulator.mgmt_client(ContainerRegistryManagementClient)
    registry = acr.registries.begin_create(
        RG, "wsregistry", {"location": "eastus", "sku": {"name": "Basic"}}
    ).result()
    # Without the workspace's registry there is nowhere to build into.
    build = {
        "build": {"contextUri": "https://example.invalid/ctx/", "dockerfilePath": "Dockerfile"}
    }
    with pytest.raises(HttpResponseError) as err:
        ws.resources.resources.begin_create_or_update_by_id(
            f"{ws.id}/environments/built/versions/1", ENVIRONMENT_API, {"properties": build}
        )
    assert "containerRegistry" in err.value.error.message
    ws.resources.resources.begin_update_by_id(
        ws.id, WORKSPACE_API, {"properties": {"containerRegistry": registry.id}}
    ).result()

    built = ws.client.environments.create_or_update(
        Environment(name="built", build=BuildContext(path="https://example.invalid/ctx/"))
    )
    assert built.build.path == "https://example.invalid/ctx/"
    assert built.image is None
    repositories = list(
        ContainerRegistryClient(
            f"https://{registry.login_server}",
            ws.emulator.credential(),
            audience="https://containerregistry.azure.net",
        ).list_repository_names()
    )
    assert len(repositories) == 1 and repositories[0].startswith("azureml/azureml_")
