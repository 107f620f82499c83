# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the product knows about VM sizes that Azure's APIs do not say.

Azure's size lists give vCPUs, memory, family and prices, but not whether a size supports
nested virtualization, which the WAA container needs (it runs Windows under QEMU/KVM). This
table comes from Azure's published size documentation; a size outside it is refused unless the
user says it was checked.
"""

from __future__ import annotations

import re

from ansible_collections.openadapt.azure_eval.plugins.module_utils.cost import VM_PRICES

# Series with nested virtualization (Intel/AMD v3-v5 general purpose and memory optimised, Fsv2).
_NESTED_SERIES = re.compile(
    r"^standard_(d|e)(\d+)(a|d|s|ds|as|ads)?_v(3|4|5)$|^standard_f(\d+)s_v2$", re.IGNORECASE
)
# Series known not to: burstable B, basic A, and the GPU families.
_NO_NESTED_SERIES = re.compile(r"^standard_(b|a|nc|nd|nv)\d", re.IGNORECASE)


def nested_virtualization(size: str) -> bool | None:
    """True, False, or None when the size is not in the table."""
    if _NESTED_SERIES.match(size):
        return True
    if _NO_NESTED_SERIES.match(size):
        return False
    return None


def vm_prices(size_entry: dict) -> dict[str, float]:
    """Dedicated and low-priority Linux prices from an AML size list entry
    (``estimatedVMPrices``), falling back to the evaluation guide's table (``cost.VM_PRICES``)."""
    prices: dict[str, float] = {}
    estimated = (size_entry or {}).get("estimatedVMPrices") or {}
    for value in estimated.get("values") or []:
        if value.get("osType", "Linux").lower() != "linux":
            continue
        tier = (
            "low_priority"
            if value.get("vmTier", "").lower() in ("lowpriority", "spot")
            else "dedicated"
        )
        prices[tier] = float(value["retailPrice"])
    name = (size_entry or {}).get("name", "").lower()
    seed_prices = {size.lower(): price for size, price in VM_PRICES.items()}
    if "dedicated" not in prices and name in seed_prices:
        prices["dedicated"] = seed_prices[name]
    return prices


def sdk_field(entity, attribute: str, wire_key: str):
    """A field of an azure-ai-ml entity. azure-ai-ml 1.35's VmSize and Usage entities leave some
    attributes None and keep the value under its wire key (``vCPUs``, ``currentValue``)."""
    value = getattr(entity, attribute, None)
    if value is None:
        value = vars(entity).get(wire_key)
    return value


def size_entry(sdk_size) -> dict:
    """An azure-ai-ml ``VmSize`` as the size list's wire shape (the keys ``vm_prices`` reads)."""
    prices = sdk_field(sdk_size, "estimated_vm_prices", "estimatedVMPrices")
    if prices is not None and not isinstance(prices, dict):
        prices = {
            "values": [
                {"retailPrice": p.retail_price, "osType": p.os_type, "vmTier": p.vm_tier}
                for p in prices.values or []
            ]
        }
    return {
        "name": sdk_size.name,
        "family": sdk_size.family,
        "vCPUs": sdk_field(sdk_size, "v_cpus", "vCPUs") or sdk_field(sdk_size, "v_cp_us", "vCPUs"),
        "memoryGB": sdk_field(sdk_size, "memory_gb", "memoryGB"),
        "lowPriorityCapable": sdk_field(sdk_size, "low_priority_capable", "lowPriorityCapable"),
        "estimatedVMPrices": prices or {"values": []},
    }
