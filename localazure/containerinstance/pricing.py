"""What Azure Container Instances charge: per second of vCPU and of GB of memory requested by the
container group, from the time its first container starts pulling until it stops (Linux, East US,
pay-as-you-go list prices of https://azure.microsoft.com/pricing/details/container-instances/).
Windows groups add a software charge per vCPU-second."""

from __future__ import annotations

from dataclasses import dataclass

VCPU_SECOND_USD = 0.0000135
GB_SECOND_USD = 0.0000015
WINDOWS_VCPU_SECOND_USD = 0.000012


@dataclass(frozen=True)
class GroupPrice:
    vcpus: float
    memory_gb: float
    os_type: str = "Linux"

    @property
    def per_second_usd(self) -> float:
        vcpu_rate = VCPU_SECOND_USD + (
            WINDOWS_VCPU_SECOND_USD if self.os_type.lower() == "windows" else 0.0
        )
        return self.vcpus * vcpu_rate + self.memory_gb * GB_SECOND_USD

    def cost(self, seconds: float) -> float:
        return round(max(0.0, seconds) * self.per_second_usd, 8)
