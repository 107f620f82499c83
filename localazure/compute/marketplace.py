"""The marketplace images a user chooses from (publishers, offers, SKUs, versions, as
``az vm image list`` and azcollection's ``version: latest`` lookup read them), the VM sizes of a
location (from the shared ``nodes.vm_catalog``) and the regional core usages."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.arm.catalog import normalise_location, regions_of
from localazure.arm.resources import in_subscription
from localazure.compute import VM_TYPE
from localazure.core.context import Context
from localazure.core.errors import not_found
from localazure.core.http import json_response, list_page
from localazure.core.router import Router
from localazure.nodes import pool as node_pool
from localazure.nodes.vm_catalog import CATALOG, family_display_name

# publisher -> offer -> sku -> (versions, hyperVGeneration, os name, os version)
IMAGES: dict[str, dict[str, dict[str, tuple[tuple[str, ...], str, str]]]] = {
    "Canonical": {
        "0001-com-ubuntu-server-jammy": {
            "22_04-lts": (("22.04.202410020", "22.04.202411010"), "V1", "22.04"),
            "22_04-lts-gen2": (("22.04.202410020", "22.04.202411010"), "V2", "22.04"),
        },
        "ubuntu-24_04-lts": {
            "server": (("24.04.202410090", "24.04.202411030"), "V2", "24.04"),
        },
    },
}


def _ci(mapping: dict[str, Any], name: str) -> tuple[str, Any] | None:
    for key, value in mapping.items():
        if key.lower() == name.lower():
            return key, value
    return None


def find(publisher: str, offer: str, sku: str, version: str) -> dict[str, str] | None:
    """The image an image reference names (``latest`` is the newest version), or None."""
    pub = _ci(IMAGES, publisher or "")
    off = _ci(pub[1], offer or "") if pub else None
    found = _ci(off[1], sku or "") if off else None
    if found is None:
        return None
    versions, generation, os_version = found[1]
    exact = versions[-1] if (version or "latest").lower() == "latest" else version
    if exact not in versions:
        return None
    return {
        "publisher": pub[0],
        "offer": off[0],
        "sku": found[0],
        "version": exact,
        "hyperVGeneration": generation,
        "osName": "ubuntu",
        "osVersion": os_version,
    }


def platform_image_not_found(ref: dict[str, Any]) -> Exception:
    text = ":".join(str(ref.get(k, "")) for k in ("publisher", "offer", "sku", "version"))
    return not_found(
        "PlatformImageNotFound",
        f"The platform image '{text}' is not available. Verify that all fields in the storage "
        "profile are correct. For more details about storage profile information, please refer "
        "to https://aka.ms/storageprofile",
    )


def register(router: Router, ctx: Context) -> None:
    base = "/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}"
    images = base + "/publishers"
    in_sub = in_subscription(ctx)

    def entry(name: str, loc: str, rid: str) -> dict[str, Any]:
        return {"name": name, "location": normalise_location(loc), "id": rid}

    def prefix(sub: str, loc: str) -> str:
        return f"/Subscriptions/{ctx.subscription_id}/Providers/Microsoft.Compute/Locations/{loc}"

    def lookup(*names: str) -> Any:
        node: Any = IMAGES
        for name in names:
            found = _ci(node, name)
            if found is None:
                raise not_found("NotFound", f"Artifact: VMImage was not found: {'/'.join(names)}.")
            node = found[1]
        return node

    async def publishers(request: Request, sub: str, loc: str) -> Response:
        return json_response([entry(p, loc, f"{prefix(sub, loc)}/Publishers/{p}") for p in IMAGES])

    async def offers(request: Request, sub: str, loc: str, pub: str) -> Response:
        return json_response(
            [
                entry(
                    o, loc, f"{prefix(sub, loc)}/Publishers/{pub}/ArtifactTypes/VMImage/Offers/{o}"
                )
                for o in lookup(pub)
            ]
        )

    async def skus(request: Request, sub: str, loc: str, pub: str, offer: str) -> Response:
        base_id = f"{prefix(sub, loc)}/Publishers/{pub}/ArtifactTypes/VMImage/Offers/{offer}/Skus"
        return json_response([entry(s, loc, f"{base_id}/{s}") for s in lookup(pub, offer)])

    async def versions(
        request: Request, sub: str, loc: str, pub: str, offer: str, sku: str
    ) -> Response:
        found = lookup(pub, offer, sku)
        base_id = (
            f"{prefix(sub, loc)}/Publishers/{pub}/ArtifactTypes/VMImage/Offers/{offer}/Skus/{sku}"
            "/Versions"
        )
        return json_response([entry(v, loc, f"{base_id}/{v}") for v in found[0]])

    async def version(
        request: Request, sub: str, loc: str, pub: str, offer: str, sku: str, ver: str
    ) -> Response:
        image = find(pub, offer, sku, ver)
        if image is None:
            raise not_found(
                "NotFound", f"Artifact: VMImage was not found: {pub}/{offer}/{sku}/{ver}."
            )
        return json_response(
            {
                **entry(
                    image["version"],
                    loc,
                    f"{prefix(sub, loc)}/Publishers/{pub}/ArtifactTypes"
                    f"/VMImage/Offers/{offer}/Skus/{sku}/Versions/{image['version']}",
                ),
                "properties": {
                    "hyperVGeneration": image["hyperVGeneration"],
                    "architecture": "x64",
                    "osDiskImage": {"operatingSystem": "Linux", "sizeInGb": 30},
                    "dataDiskImages": [],
                    "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": True},
                    "imageDeprecationStatus": {"imageState": "Active"},
                    "features": [
                        {"name": "SecurityType", "value": "TrustedLaunchSupported"},
                        {"name": "IsAcceleratedNetworkSupported", "value": "True"},
                    ],
                },
            }
        )

    async def vm_sizes(request: Request, sub: str, loc: str) -> Response:
        return json_response(
            list_page(
                [
                    {
                        "name": size.name,
                        "numberOfCores": size.vcpus,
                        "osDiskSizeInMB": 1047552,
                        "resourceDiskSizeInMB": size.max_resource_volume_mb,
                        "memoryInMB": int(size.memory_gb * 1024),
                        "maxDataDiskCount": max(4, size.vcpus * 2),
                    }
                    for size in CATALOG
                ]
            )
        )

    async def usages(request: Request, sub: str, loc: str) -> Response:
        location = normalise_location(loc)
        limits = node_pool.quota(ctx)
        use = node_pool.cores_in_use(ctx, location)
        items = [
            {
                "unit": "Count",
                "currentValue": use.dedicated,
                "limit": limits.total_dedicated,
                "name": {"value": "cores", "localizedValue": "Total Regional vCPUs"},
            }
        ]
        for family in sorted({s.family for s in CATALOG}):
            items.append(
                {
                    "unit": "Count",
                    "currentValue": use.families.get(family, 0),
                    "limit": limits.family_limit(family),
                    "name": {
                        "value": family,
                        "localizedValue": f"{family_display_name(family)} vCPUs",
                    },
                }
            )
        return json_response(list_page(items))

    async def resource_skus(request: Request, sub: str) -> Response:
        """The VM sizes as resource SKUs (family, vCPUs, memory, security features), in every
        location of the catalogue: what ``az vm list-skus`` and azure_rm_vmsku_info read."""
        regions = regions_of(VM_TYPE)
        items = []
        for size in CATALOG:
            capabilities = {
                "vCPUs": str(size.vcpus),
                "MemoryGB": f"{size.memory_gb:g}",
                "PremiumIO": str(size.premium_io),
                "LowPriorityCapable": str(size.low_priority_capable),
                "HyperVGenerations": "V1,V2",
                "TrustedLaunchDisabled": "False",
            }
            for region in regions:
                items.append(
                    {
                        "resourceType": "virtualMachines",
                        "name": size.name,
                        "tier": "Standard",
                        "size": size.name.split("_", 1)[1],
                        "family": size.family,
                        "locations": [region],
                        "locationInfo": [{"location": region, "zones": [], "zoneDetails": []}],
                        "capabilities": [{"name": k, "value": v} for k, v in capabilities.items()],
                        "restrictions": [],
                    }
                )
        return json_response(list_page(items))

    artifact = images + "/{pub}/artifacttypes/vmimage/offers"
    router.add("GET", images, publishers, parent=in_sub)
    router.add("GET", artifact, offers, parent=in_sub)
    router.add("GET", artifact + "/{offer}/skus", skus, parent=in_sub)
    router.add("GET", artifact + "/{offer}/skus/{sku}/versions", versions, parent=in_sub)
    router.add("GET", artifact + "/{offer}/skus/{sku}/versions/{ver}", version, parent=in_sub)
    router.add("GET", base + "/vmSizes", vm_sizes, parent=in_sub)
    router.add("GET", base + "/usages", usages, parent=in_sub)
    router.add(
        "GET", "/subscriptions/{sub}/providers/Microsoft.Compute/skus", resource_skus, parent=in_sub
    )
