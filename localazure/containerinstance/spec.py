"""A container group's PUT body, checked as ACI checks it and split into what GET returns and the
secrets it never returns (secure environment values, registry passwords, storage account keys),
which are kept apart in the store (``SECRETS_KIND``)."""

from __future__ import annotations

import copy
import re
from typing import Any

from localazure.core.errors import bad_request
from localazure.core.http import enum_value

RESTART_POLICIES = ("Always", "OnFailure", "Never")
OS_TYPES = ("Linux", "Windows")
PROTOCOLS = ("TCP", "UDP")
# Standard-SKU limits of a Linux container group in most regions.
MAX_GROUP_CPU = 4.0
MAX_GROUP_MEMORY_GB = 16.0
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _invalid(code: str, message: str):
    return bad_request(code, message)


def check_name(name: str, what: str = "container group") -> None:
    if not (1 <= len(name) <= 63) or not _NAME.match(name):
        raise _invalid(
            "InvalidContainerGroupName" if what == "container group" else "InvalidContainerName",
            f"The {what} name '{name}' is invalid. The name must contain no more than 63 "
            "characters and only lower-case alphanumeric characters and '-'. It can not start "
            "or end with '-'.",
        )


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _invalid(
            "InvalidRequestContent", f"'{field}' must be a positive number, not {value!r}."
        )
    return float(value)


def _resources(container: str, props: dict[str, Any]) -> tuple[float, float]:
    resources = props.get("resources") or {}
    requests = resources.get("requests") or {}
    if "cpu" not in requests or "memoryInGB" not in requests:
        raise _invalid(
            "ResourceRequestsMissing",
            f"The container '{container}' must specify resources.requests.cpu and "
            "resources.requests.memoryInGB.",
        )
    cpu = _number(requests["cpu"], f"{container}.resources.requests.cpu")
    memory = _number(requests["memoryInGB"], f"{container}.resources.requests.memoryInGB")
    limits = resources.get("limits") or {}
    for key, request in (("cpu", cpu), ("memoryInGB", memory)):
        if key in limits and _number(limits[key], f"{container}.resources.limits.{key}") < request:
            raise _invalid(
                "InvalidContainerResourceLimits",
                f"The resource limit '{key}' of container '{container}' ({limits[key]}) must be "
                f"greater than or equal to its request ({request}).",
            )
    return cpu, memory


def _environment(container: str, props: dict[str, Any]) -> tuple[list[dict], dict[str, str]]:
    public, secure = [], {}
    for variable in props.get("environmentVariables") or []:
        name = variable.get("name")
        if not name:
            raise _invalid(
                "InvalidEnvironmentVariable",
                f"An environment variable of container '{container}' has no name.",
            )
        if variable.get("secureValue") is not None:
            secure[name] = str(variable["secureValue"])
            public.append({"name": name})
        else:
            public.append({"name": name, "value": str(variable.get("value") or "")})
    return public, secure


def _volumes(body_props: dict[str, Any]) -> tuple[list[dict], dict[str, str]]:
    public, keys = [], {}
    for volume in body_props.get("volumes") or []:
        name = volume.get("name") or ""
        kinds = [k for k in ("azureFile", "emptyDir", "secret", "gitRepo") if k in volume]
        if len(kinds) != 1:
            raise _invalid(
                "InvalidVolume",
                f"The volume '{name}' must have exactly one of azureFile, emptyDir, secret or "
                "gitRepo.",
            )
        if kinds[0] in ("secret", "gitRepo"):
            raise _invalid(
                "UnsupportedVolumeType",
                f"The volume '{name}' is of type {kinds[0]}, which localazure does not run "
                "(azureFile and emptyDir only).",
            )
        entry = copy.deepcopy(volume)
        if kinds[0] == "azureFile":
            azure_file = entry["azureFile"]
            for field in ("shareName", "storageAccountName"):
                if not azure_file.get(field):
                    raise _invalid(
                        "InvalidAzureFileVolume",
                        f"The Azure File volume '{name}' must specify '{field}'.",
                    )
            keys[name] = str(azure_file.pop("storageAccountKey", "") or "")
        public.append(entry)
    return public, keys


def _registry_credentials(body_props: dict[str, Any]) -> tuple[list[dict], dict[str, str]]:
    public, passwords = [], {}
    for credential in body_props.get("imageRegistryCredentials") or []:
        server = str(credential.get("server") or "").lower()
        if not server:
            raise _invalid("InvalidImageRegistryCredential", "A registry credential has no server.")
        if not credential.get("identity") and not credential.get("username"):
            raise _invalid(
                "InvalidImageRegistryCredential",
                f"The registry credential for '{server}' needs a username and password or an "
                "identity.",
            )
        entry = {k: v for k, v in credential.items() if k != "password" and v is not None}
        entry["server"] = server
        if credential.get("password") is not None:
            passwords[server] = str(credential["password"])
        public.append(entry)
    return public, passwords


def parse(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The group's properties as stored (no secrets), and its secrets."""
    props = body.get("properties")
    if not isinstance(props, dict):
        raise _invalid("InvalidRequestContent", "The request must have 'properties'.")
    containers = props.get("containers") or []
    if not containers:
        raise _invalid(
            "ContainerGroupContainersMissing",
            "The container group must have at least one container.",
        )
    volumes, storage_keys = _volumes(props)
    volume_names = {v["name"] for v in volumes}
    credentials, passwords = _registry_credentials(props)
    stored_containers, secure_env = [], {}
    total_cpu = total_memory = 0.0
    seen: set[str] = set()
    for container in containers:
        name = container.get("name") or ""
        check_name(name, "container")
        if name in seen:
            raise _invalid(
                "DuplicateContainerName", f"The container name '{name}' is used more than once."
            )
        seen.add(name)
        cprops = container.get("properties") or {}
        if not cprops.get("image"):
            raise _invalid("ContainerImageMissing", f"The container '{name}' has no image.")
        command = cprops.get("command") or []
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise _invalid(
                "InvalidContainerCommand",
                f"The command of container '{name}' must be a list of strings.",
            )
        cpu, memory = _resources(name, cprops)
        total_cpu, total_memory = total_cpu + cpu, total_memory + memory
        env, secure = _environment(name, cprops)
        secure_env[name] = secure
        for mount in cprops.get("volumeMounts") or []:
            if mount.get("name") not in volume_names:
                raise _invalid(
                    "VolumeMountVolumeNotFound",
                    f"The volume mount '{mount.get('name')}' of container '{name}' names no "
                    "volume of the container group.",
                )
            if not str(mount.get("mountPath") or "").startswith("/"):
                raise _invalid(
                    "InvalidVolumeMountPath",
                    f"The mount path of volume '{mount.get('name')}' in container '{name}' must "
                    "be an absolute path.",
                )
        for port in cprops.get("ports") or []:
            if not isinstance(port.get("port"), int) or not 1 <= port["port"] <= 65535:
                raise _invalid("InvalidContainerPort", f"Invalid port {port!r} in '{name}'.")
        stored = copy.deepcopy(container)
        stored["properties"]["environmentVariables"] = env
        stored["properties"]["command"] = command
        stored_containers.append(stored)
    if total_cpu > MAX_GROUP_CPU or total_memory > MAX_GROUP_MEMORY_GB:
        raise _invalid(
            "ResourceRequestsExceedsLimits",
            f"The container group requests {total_cpu:g} CPU and {total_memory:g} GB of memory; "
            f"a container group may request at most {MAX_GROUP_CPU:g} CPU and "
            f"{MAX_GROUP_MEMORY_GB:g} GB in this region.",
        )
    stored_props = {
        "sku": props.get("sku") or "Standard",
        "containers": stored_containers,
        "imageRegistryCredentials": credentials,
        "restartPolicy": enum_value(
            props.get("restartPolicy") or "Always", RESTART_POLICIES, "restartPolicy"
        ),
        "osType": enum_value(props.get("osType") or "Linux", OS_TYPES, "osType"),
        "volumes": volumes,
    }
    if props.get("ipAddress"):
        stored_props["ipAddress"] = {**props["ipAddress"], "ip": "127.0.0.1"}
    secrets = {"env": secure_env, "storage_keys": storage_keys, "passwords": passwords}
    return stored_props, secrets


def requests_of(group: dict[str, Any]) -> tuple[float, float]:
    """The group's total CPU and memory requests."""
    cpu = memory = 0.0
    for container in group["properties"]["containers"]:
        requests = container["properties"]["resources"]["requests"]
        cpu += float(requests["cpu"])
        memory += float(requests["memoryInGB"])
    return cpu, memory
