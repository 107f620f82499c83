"""A Batch pool as both planes see it: the management API's shape (stored as the ARM resource)
validated on the way in, the pool's node pool (``PoolSpec`` per priority), its resize
operation, and the data plane's ``CloudPool`` shape.

The resize operation (record ``batch-resize`` per pool) holds the targets, when the resize
started and its errors; ``nodes`` moves the pool's nodes towards the targets and settles the
operation (``allocationState`` ``Resizing`` -> ``Steady``).
"""

from __future__ import annotations

import re
from typing import Any

from localazure.batch import autoscale
from localazure.core.context import Context
from localazure.core.errors import AzureError, bad_request
from localazure.ml import parse_duration
from localazure.nodes import vm_catalog
from localazure.nodes.pool import PoolSpec
from localazure.nodes.vm_catalog import VmSize

RESIZE_KIND = "batch-resize"
DEFAULT_RESIZE_TIMEOUT = "PT15M"
MIN_RESIZE_TIMEOUT_S = 300
_POOL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A custom image: a managed image, or a gallery image (latest) or image version.
_IMAGE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/"
    r"(?:images/[^/]+|galleries/[^/]+/images/[^/]+(?:/versions/[^/]+)?)$",
    re.IGNORECASE,
)
SECURITY_TYPES = {
    "standard": "Standard",
    "trustedlaunch": "TrustedLaunch",
    "confidentialvm": "ConfidentialVM",
}
DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskCompletion", "retainedData")


def invalid(message: str, target: str) -> AzureError:
    return bad_request("InvalidPropertyValue", message, target=target)


# -- validation of the management API's pool ------------------------------------------------------


def check_pool_name(name: str) -> None:
    if not _POOL_ID.match(name):
        raise invalid(
            f"The pool name '{name}' is invalid: up to 64 letters, digits, hyphens and "
            "underscores.",
            "poolName",
        )


def size_of(props: dict[str, Any]) -> VmSize:
    size = vm_catalog.find(props.get("vmSize"))
    if size is None:
        known = ", ".join(s.name for s in vm_catalog.CATALOG)
        raise invalid(
            f"The VM size '{props.get('vmSize')}' is not supported for Batch pools in the "
            f"emulator; supported sizes are {known}.",
            "vmSize",
        )
    return size


def is_custom_image_id(value: str) -> bool:
    return bool(_IMAGE_ID.match(value or ""))


def _check_image(image: dict[str, Any]) -> None:
    if image.get("id"):
        if not _IMAGE_ID.match(image["id"]):
            raise invalid(
                f"imageReference.id '{image['id']}' is not the id of a managed image or a "
                "Compute gallery image (version).",
                "deploymentConfiguration.virtualMachineConfiguration.imageReference.id",
            )
        return
    missing = [k for k in ("publisher", "offer", "sku") if not image.get(k)]
    if missing:
        raise invalid(
            "imageReference needs either an id (custom image) or publisher, offer and sku "
            f"(marketplace image); missing {missing}.",
            "deploymentConfiguration.virtualMachineConfiguration.imageReference",
        )


def _check_containers(vm: dict[str, Any], identity_ids: set[str]) -> None:
    containers = vm.get("containerConfiguration")
    if not containers:
        return
    target = "deploymentConfiguration.virtualMachineConfiguration.containerConfiguration"
    if containers.get("type") not in ("DockerCompatible", "CriCompatible"):
        raise invalid(
            f"containerConfiguration.type must be DockerCompatible or CriCompatible, not "
            f"{containers.get('type')!r}.",
            target + ".type",
        )
    names = containers.get("containerImageNames") or []
    if not all(isinstance(n, str) and n for n in names):
        raise invalid("containerImageNames must be a list of image names.", target)
    for registry in containers.get("containerRegistries") or []:
        reference = (registry.get("identityReference") or {}).get("resourceId")
        if reference and reference.lower() not in identity_ids:
            raise invalid(
                f"The container registry '{registry.get('registryServer')}' refers to the "
                f"identity '{reference}', which is not one of the pool's user-assigned "
                "identities.",
                target + ".containerRegistries.identityReference",
            )
        if not reference and not registry.get("username"):
            raise invalid(
                f"The container registry '{registry.get('registryServer')}' needs either an "
                "identityReference or a username and password.",
                target + ".containerRegistries",
            )


def security_type(props: dict[str, Any]) -> str:
    vm = (props.get("deploymentConfiguration") or {}).get("virtualMachineConfiguration") or {}
    value = ((vm.get("securityProfile") or {}).get("securityType")) or "standard"
    return SECURITY_TYPES.get(str(value).lower(), value)


def _check_security(vm: dict[str, Any]) -> None:
    value = (vm.get("securityProfile") or {}).get("securityType")
    if value is not None and str(value).lower() not in SECURITY_TYPES:
        raise invalid(
            f"securityProfile.securityType '{value}' is not one of trustedLaunch, "
            "confidentialVM, standard.",
            "deploymentConfiguration.virtualMachineConfiguration.securityProfile.securityType",
        )


def duration_s(value: str | None, default: str, target: str) -> float:
    try:
        return parse_duration(value or default)
    except ValueError as err:
        raise invalid(str(err), target) from None


def check_scale(scale: dict[str, Any], size: VmSize) -> None:
    fixed, auto = scale.get("fixedScale"), scale.get("autoScale")
    if fixed and auto:
        raise invalid("scaleSettings may hold fixedScale or autoScale, not both.", "scaleSettings")
    if auto:
        if not auto.get("formula"):
            raise invalid("autoScale.formula is required.", "scaleSettings.autoScale.formula")
        try:
            autoscale.evaluate(auto["formula"], autoscale.Samples())
        except autoscale.FormulaError as err:
            raise bad_request(
                "InvalidAutoScaleFormula", str(err), target="scaleSettings.autoScale.formula"
            ) from None
        return
    fixed = fixed or {}
    for name in ("targetDedicatedNodes", "targetLowPriorityNodes"):
        value = fixed.get(name, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise invalid(
                f"{name} must be a whole number >= 0.", f"scaleSettings.fixedScale.{name}"
            )
    if fixed.get("targetLowPriorityNodes") and not size.low_priority_capable:
        raise invalid(
            f"The VM size {size.name} does not support Spot/low-priority nodes.",
            "scaleSettings.fixedScale.targetLowPriorityNodes",
        )
    timeout = duration_s(fixed.get("resizeTimeout"), DEFAULT_RESIZE_TIMEOUT, "resizeTimeout")
    if timeout < MIN_RESIZE_TIMEOUT_S:
        raise invalid(
            "resizeTimeout must be at least 5 minutes (PT5M).",
            "scaleSettings.fixedScale.resizeTimeout",
        )


def validate(props: dict[str, Any], identity_ids: set[str]) -> VmSize:
    """Check a management-API pool's properties; return its VM size."""
    size = size_of(props)
    vm = (props.get("deploymentConfiguration") or {}).get("virtualMachineConfiguration")
    if not vm:
        raise invalid(
            "deploymentConfiguration.virtualMachineConfiguration is required (the emulator has "
            "no Cloud Services configuration).",
            "deploymentConfiguration",
        )
    if not vm.get("nodeAgentSkuId"):
        raise invalid(
            "virtualMachineConfiguration.nodeAgentSkuId is required, e.g. "
            "'batch.node.ubuntu 22.04'.",
            "deploymentConfiguration.virtualMachineConfiguration.nodeAgentSkuId",
        )
    _check_image(vm.get("imageReference") or {})
    _check_containers(vm, identity_ids)
    _check_security(vm)
    check_scale(props.get("scaleSettings") or {}, size)
    slots = props.get("taskSlotsPerNode", 1)
    if slots != 1:
        raise invalid(
            "The emulator runs one task per node: taskSlotsPerNode must be 1.", "taskSlotsPerNode"
        )
    return size


# -- the pool's nodes -----------------------------------------------------------------------------


def node_spec(pool: dict[str, Any], priority: str, target: int) -> PoolSpec:
    """The shared node pool's view of one priority of a Batch pool (nodes are kept, never
    scaled down for idleness: a Batch pool holds its target)."""
    return PoolSpec(
        id=pool["id"],
        name=pool["name"],
        location=pool["location"],
        size=vm_catalog.find(pool["properties"]["vmSize"]),
        priority=priority,
        min_nodes=target,
        max_nodes=target,
        idle_s=float("inf"),
        security_type=security_type(pool["properties"]),
    )


def account_id_of(pool_id: str) -> str:
    return pool_id.rsplit("/pools/", 1)[0]


def vm_configuration(pool: dict[str, Any]) -> dict[str, Any]:
    return pool["properties"]["deploymentConfiguration"]["virtualMachineConfiguration"]


def container_images(pool: dict[str, Any]) -> list[str]:
    return list(
        (vm_configuration(pool).get("containerConfiguration") or {}).get("containerImageNames")
        or []
    )


def registry_identity(pool: dict[str, Any], image_ref: str) -> str | None:
    """The principal a node pulls ``image_ref`` as: the identity the pool's container
    registry entry for that registry names (None: anonymously)."""
    server = image_ref.split("/", 1)[0].lower() if "/" in image_ref else "docker.io"
    for registry in (vm_configuration(pool).get("containerConfiguration") or {}).get(
        "containerRegistries"
    ) or []:
        if (registry.get("registryServer") or "docker.io").lower() != server:
            continue
        reference = (registry.get("identityReference") or {}).get("resourceId")
        if reference:
            found = (pool.get("identity") or {}).get("userAssignedIdentities") or {}
            for identity_id, entry in found.items():
                if identity_id.lower() == reference.lower():
                    return entry["principalId"]
    return None


def custom_image_id(pool: dict[str, Any]) -> str | None:
    return (vm_configuration(pool).get("imageReference") or {}).get("id")


# -- resize operation -----------------------------------------------------------------------------


def resize(ctx: Context, pool_id: str) -> dict[str, Any] | None:
    return ctx.store.get(RESIZE_KIND, pool_id.lower())


def start_resize(
    ctx: Context,
    pool_id: str,
    dedicated: int,
    low_priority: int,
    timeout: str,
    deallocation: str,
    now: float,
) -> dict[str, Any]:
    operation = {
        "targetDedicatedNodes": dedicated,
        "targetLowPriorityNodes": low_priority,
        "resizeTimeout": timeout,
        "nodeDeallocationOption": deallocation,
        "startTime": now,
        "state": "resizing",
        "transitionTime": now,
        "errors": [],
    }
    ctx.store.put(RESIZE_KIND, pool_id.lower(), operation)
    return operation


def save_resize(ctx: Context, pool_id: str, operation: dict[str, Any]) -> None:
    ctx.store.put(RESIZE_KIND, pool_id.lower(), operation)


def resize_from_scale(ctx: Context, pool: dict[str, Any], now: float, samples=None) -> None:
    """Start the resize a pool's scale settings ask for (fixed targets, or the formula's)."""
    scale = pool["properties"].get("scaleSettings") or {}
    auto = scale.get("autoScale")
    if auto:
        result = autoscale.evaluate(auto["formula"], samples or autoscale.Samples())
        dedicated, low = result.dedicated, result.low_priority
        timeout = DEFAULT_RESIZE_TIMEOUT
        option = "requeue"
        ctx.store.put(
            "batch-autoscale-run",
            pool["id"].lower(),
            {"evaluationTime": now, "results": result.text},
        )
    else:
        fixed = scale.get("fixedScale") or {}
        dedicated = fixed.get("targetDedicatedNodes", 0)
        low = fixed.get("targetLowPriorityNodes", 0)
        timeout = fixed.get("resizeTimeout") or DEFAULT_RESIZE_TIMEOUT
        option = fixed.get("nodeDeallocationOption") or "requeue"
    start_resize(ctx, pool["id"], dedicated, low, timeout, option, now)
