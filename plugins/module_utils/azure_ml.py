# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build an azure-ai-ml ``MLClient`` for the cloud the azcollection options name.

azcollection's ``cloud_environment`` is a cloud name (AzureCloud, AzureChinaCloud,
AzureUSGovernment) or a metadata discovery URL (Azure Stack, localazure). azure-ai-ml reads a
discovery URL from ``ARM_CLOUD_METADATA_URL``; this module sets it from the URL form so that
both SDKs talk to the same cloud.
"""

from __future__ import annotations

import os

METADATA_ENV = "ARM_CLOUD_METADATA_URL"
AZURE_ML_CLOUDS = {"AzureCloud", "AzureChinaCloud", "AzureUSGovernment"}


def metadata_url(cloud_environment: str | None) -> str | None:
    if cloud_environment and cloud_environment.startswith("https://"):
        return cloud_environment.rstrip("/") + "/metadata/endpoints?api-version=2019-05-01"
    return None


def ml_client(
    credential,
    subscription_id: str,
    resource_group: str,
    workspace: str | None,
    cloud_environment: str | None = None,
):
    from azure.ai.ml import MLClient

    url = metadata_url(cloud_environment)
    if url:
        os.environ.setdefault(METADATA_ENV, url)
    kwargs = {}
    if cloud_environment in AZURE_ML_CLOUDS:
        kwargs["cloud"] = cloud_environment
    elif os.environ.get(METADATA_ENV):
        custom = _custom_cloud(os.environ[METADATA_ENV])
        if custom:
            kwargs["cloud"] = custom
    return MLClient(
        credential=credential,
        subscription_id=subscription_id,
        resource_group_name=resource_group,
        workspace_name=workspace,
        **kwargs,
    )


def _custom_cloud(url: str) -> str | None:
    """The name of the cloud a discovery URL describes, registered with azure-ai-ml. azure-ai-ml
    caches a discovered cloud under the wrong key (1.x ``_get_cloud``:
    ``_environments.update(new_cloud)``), so it reads the URL again for every MLClient and every
    endpoint lookup; registered here, it is read once per process."""
    from azure.ai.ml import _azure_environments as environments

    for name, details in _clouds(url).items():
        if str(details.get("resource_manager", "")).rstrip("/") in url:
            environments._environments[name] = details
            return name
    return None


_CLOUDS: dict[str, dict] = {}


def _clouds(url: str) -> dict:
    """The clouds of a discovery URL, read once per process (an empty answer, a failed read, is
    read again)."""
    from azure.ai.ml import _azure_environments as environments

    if not _CLOUDS.get(url):
        _CLOUDS[url] = environments._get_clouds_by_metadata_url(url)
    return _CLOUDS[url]


def workspace_client(module_base):
    """The MLClient of an azcollection-style module (``AzureRMModuleBase``) for the workspace in
    its ``resource_group``/``workspace`` options, with the module's credential and cloud."""
    params = module_base.module.params
    return ml_client(
        module_base.azure_auth.azure_credential_track2,
        module_base.subscription_id,
        params["resource_group"],
        params["workspace"],
        module_base.azure_auth._cloud_environment.name,
    )


# azure-ai-ml keeps two things the project needs behind private members; they are reached here
# only, so that an SDK upgrade that moves them breaks one place.


def arm_endpoint(ml_client) -> str:
    """The Resource Manager endpoint the client talks to (its cloud's, or the discovery
    URL's), for the other management clients of the same run (Azure Monitor)."""
    return ml_client._base_url


def workspace_id(ml_client) -> str:
    return (
        f"/subscriptions/{ml_client.subscription_id}/resourceGroups/"
        f"{ml_client.resource_group_name}/providers/Microsoft.MachineLearningServices/"
        f"workspaces/{ml_client.workspace_name}"
    )


def run_details(ml_client, name: str):
    """A job's run-history details (status, error, log URLs, start and end times): what
    ``ml_client.jobs.stream`` reads, one request."""
    return ml_client.jobs._runs_operations.get_run_details(name)


def run_error(details) -> tuple[str | None, str | None]:
    """(code, message) of a failed run: the inner code when there is one (``UserProcessFailed``,
    ``NodeLost``), else the category (``UserError``, ``SystemError``)."""
    error = details.error.error if details.error and details.error.error else None
    if error is None:
        return None, None
    inner = getattr(error, "inner_error", None)
    return (inner.code if inner and inner.code else None) or error.code, error.message


def compute_resource(ml_client, name: str):
    """A compute's REST resource, with what the ``AmlCompute`` entity drops (current node count,
    node state counts)."""
    return ml_client.compute._operation.get(
        ml_client.resource_group_name, ml_client.workspace_name, name
    )


def set_min_nodes(ml_client, name: str, min_nodes: int) -> int:
    """Set a cluster's minimum node count by a PUT of its whole REST resource (the entity would
    drop what it does not model, such as the security type); returns the minimum it had."""
    rest = compute_resource(ml_client, name)
    scale = rest.properties.properties.scale_settings
    previous = int(scale.min_node_count or 0)
    wanted = max(0, min(min_nodes, int(scale.max_node_count or min_nodes)))
    if wanted != previous:
        scale.min_node_count = wanted
        ml_client.compute._operation.begin_create_or_update(
            ml_client.resource_group_name, ml_client.workspace_name, name, rest
        ).result()
    return previous


WORKSPACE_ARGS = dict(
    resource_group=dict(type="str", required=True),
    workspace=dict(type="str", required=True),
)
