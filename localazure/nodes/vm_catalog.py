"""The emulator's VM-size catalogue, one for every service that runs nodes (AmlCompute today;
Compute and Batch later), with what the product and the simulation need:
vCPUs and memory, the quota family as Azure names it, hourly prices (Linux, East US,
pay-as-you-go; low priority at about 20% of dedicated) and whether the size supports nested
virtualization (which the WAA container needs to run its Windows VM).

Nested virtualization is supported on the Intel Dv3/Dsv3/Ev3/Esv3, Dv4/Dv5 and Fsv2 families;
not on burstable B-series, Av2 or Dv2.
"""

from __future__ import annotations

from dataclasses import dataclass

LOW_PRIORITY_DISCOUNT = 0.2
BILLING_CURRENCY = "USD"


@dataclass(frozen=True)
class VmSize:
    name: str
    family: str
    vcpus: int
    memory_gb: float
    price_hourly: float
    nested_virtualization: bool
    low_priority_capable: bool = True
    premium_io: bool = False
    max_resource_volume_mb: int = 0

    @property
    def low_priority_price_hourly(self) -> float:
        return round(self.price_hourly * LOW_PRIORITY_DISCOUNT, 4)

    def price_for(self, priority: str) -> float:
        if priority.lower() == "lowpriority":
            return self.low_priority_price_hourly
        return self.price_hourly


def _size(
    name: str,
    family: str,
    vcpus: int,
    memory_gb: float,
    price_hourly: float,
    *,
    nested: bool,
    premium_io: bool = True,
    low_priority: bool = True,
    temp_disk_mb: int = 0,
) -> VmSize:
    return VmSize(
        name=name,
        family=family,
        vcpus=vcpus,
        memory_gb=memory_gb,
        price_hourly=price_hourly,
        nested_virtualization=nested,
        low_priority_capable=low_priority,
        premium_io=premium_io,
        max_resource_volume_mb=temp_disk_mb,
    )


CATALOG: tuple[VmSize, ...] = (
    # The sizes the WAA evaluation considers (the reliability review's VM table).
    _size(
        "Standard_D2_v3",
        "standardDv3Family",
        2,
        8,
        0.096,
        nested=True,
        premium_io=False,
        temp_disk_mb=51200,
    ),
    _size(
        "Standard_D4_v3",
        "standardDv3Family",
        4,
        16,
        0.192,
        nested=True,
        premium_io=False,
        temp_disk_mb=102400,
    ),
    _size(
        "Standard_D8_v3",
        "standardDv3Family",
        8,
        32,
        0.384,
        nested=True,
        premium_io=False,
        temp_disk_mb=204800,
    ),
    _size("Standard_E2s_v3", "standardESv3Family", 2, 16, 0.126, nested=True, temp_disk_mb=32768),
    _size("Standard_D4s_v5", "standardDSv5Family", 4, 16, 0.208, nested=True),
    # Further sizes with nested virtualization.
    _size("Standard_D2s_v3", "standardDSv3Family", 2, 8, 0.096, nested=True, temp_disk_mb=16384),
    _size("Standard_D4s_v3", "standardDSv3Family", 4, 16, 0.192, nested=True, temp_disk_mb=32768),
    _size("Standard_D8s_v3", "standardDSv3Family", 8, 32, 0.384, nested=True, temp_disk_mb=65536),
    _size("Standard_E4s_v3", "standardESv3Family", 4, 32, 0.252, nested=True, temp_disk_mb=65536),
    _size("Standard_D2s_v5", "standardDSv5Family", 2, 8, 0.096, nested=True),
    _size("Standard_D8s_v5", "standardDSv5Family", 8, 32, 0.384, nested=True),
    _size("Standard_F4s_v2", "standardFSv2Family", 4, 8, 0.169, nested=True, temp_disk_mb=32768),
    # Sizes without nested virtualization: the WAA container cannot start on them.
    _size(
        "Standard_B2s",
        "standardBSFamily",
        2,
        4,
        0.0416,
        nested=False,
        low_priority=False,
        temp_disk_mb=8192,
    ),
    _size(
        "Standard_A2_v2",
        "standardAv2Family",
        2,
        4,
        0.091,
        nested=False,
        premium_io=False,
        temp_disk_mb=20480,
    ),
    _size("Standard_DS3_v2", "standardDSv2Family", 4, 14, 0.229, nested=False, temp_disk_mb=28672),
)

_BY_NAME = {size.name.lower(): size for size in CATALOG}


def find(name: str | None) -> VmSize | None:
    """The size called ``name`` (case-insensitive, as Azure accepts ``STANDARD_D4_V3``)."""
    return _BY_NAME.get((name or "").lower())


def families() -> list[str]:
    return sorted({size.family for size in CATALOG})


def family_display_name(family: str) -> str:
    """``standardDSv5Family`` -> ``Standard DSv5 Family``, as the usages API labels quotas."""
    core = family.removeprefix("standard").removesuffix("Family")
    return f"Standard {core} Family"
