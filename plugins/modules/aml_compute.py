#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aml_compute
short_description: Manage an Azure Machine Learning compute cluster (AmlCompute)
version_added: "0.1.0"
description:
  - Creates, updates or deletes an Azure ML compute cluster with azure-ai-ml.
  - Before creating anything it checks what a Windows Agent Arena worker needs and Azure would
    only reveal hours later; each refusal says what to change.
  - "Check 1: the VM size exists in the workspace's region."
  - "Check 2: the size supports nested virtualization, which the WAA container needs to run
    Windows under KVM (unless O(require_nested_virtualization=false))."
  - "Check 3: the security type is V(Standard); V(TrustedLaunch) VMs do not run nested VMs."
  - "Check 4: O(max_instances) times the size's vCPUs fits in the family's (or, for low
    priority, the regional) core quota, less the cores in use."
  - The size, priority and security type of an existing cluster cannot change; the module fails
    and says to delete the cluster or choose another name. Scale settings and tags update in place.
options:
  name:
    description: Compute cluster name (3-24 characters, letters, digits and hyphens, starting with a letter).
    type: str
    required: true
  location:
    description:
      - Region of the workspace. When given, the size and quota checks read that region directly,
        so they work before the workspace exists (a preflight in check mode).
    type: str
  size:
    description: VM size of the nodes.
    type: str
    default: Standard_D4s_v5
  min_instances:
    description: Nodes kept when idle; 0 scales to zero and costs nothing between runs.
    type: int
    default: 0
  max_instances:
    description: Most nodes the cluster scales to (one per concurrent worker).
    type: int
    default: 1
  idle_time_before_scale_down:
    description: Seconds a node stays idle before it is released.
    type: int
    default: 300
  tier:
    description: C(dedicated) or C(low_priority) (spot; cheaper, can be preempted).
    type: str
    choices: [dedicated, low_priority]
    default: dedicated
  security_type:
    description:
      - C(Standard) or C(TrustedLaunch). Azure's AmlCompute API does not expose it; it is sent in
        the cluster's property bag (C(propertyBag.securityType)), which localazure reads.
      - C(TrustedLaunch) is refused when I(require_nested_virtualization=true).
    type: str
    choices: [Standard, TrustedLaunch]
    default: Standard
  identity_ids:
    description: Resource ids of user-assigned managed identities for the nodes (for example the one holding AcrPull).
    type: list
    elements: str
    default: []
  require_nested_virtualization:
    description: Refuse sizes and security types that cannot run a nested VM.
    type: bool
    default: true
  tags:
    description: Tags of the cluster.
    type: dict
  state:
    description: C(present) or C(absent).
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - azure.azcollection.azure
  - openadapt.azure_eval.aml_workspace
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
notes:
  - Supports C(--check) (the preflight checks run, nothing is created) and C(--diff).
"""

EXAMPLES = r"""
- name: Read the registry's pull identity (made by the registry layer)
  azure.azcollection.azure_rm_resource_info:
    resource_group: openadapt-agents
    provider: ManagedIdentity
    resource_type: userAssignedIdentities
    resource_name: openadaptevals-pull
    api_version: "2023-01-31"
  register: pull_identity

- name: A cluster of up to 10 nested-virtualization nodes that scales to zero
  openadapt.azure_eval.aml_compute:
    resource_group: openadapt-agents
    workspace: openadapt-ml
    name: waa-cluster
    size: Standard_D4s_v5
    max_instances: 10
    idle_time_before_scale_down: 600
    identity_ids:
      - "{{ pull_identity.response[0].id }}"
"""

RETURN = r"""
compute:
  description: The cluster as Azure ML reports it.
  returned: when state is present
  type: dict
  sample:
    name: waa-cluster
    size: STANDARD_D4S_V5
    tier: dedicated
    min_instances: 0
    max_instances: 10
    idle_time_before_scale_down: 600
    security_type: Standard
    provisioning_state: Succeeded
vm_size:
  description: The size's entry in the region's size list (vCPUs, memory, family, prices).
  returned: when state is present
  type: dict
prices:
  description: Hourly Linux prices of one node, C(dedicated) and C(low_priority), in USD.
  returned: when state is present
  type: dict
  sample: {dedicated: 0.208, low_priority: 0.0416}
"""

import re
import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from azure.ai.ml.entities import AmlCompute, IdentityConfiguration, ManagedIdentityConfiguration
    from azure.core.exceptions import ResourceNotFoundError
except ImportError:
    AmlCompute = object
    AZURE_SDK_IMPORT_ERROR = traceback.format_exc()
else:
    AZURE_SDK_IMPORT_ERROR = None

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils import azure_ml, vm_sizes

_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")


class _ClusterWithSecurityType(AmlCompute):
    """AmlCompute that also sends the security type, which azure-ai-ml's entity has no field for."""

    def __init__(self, *, security_type, **kwargs):
        super().__init__(**kwargs)
        self._security_type = security_type

    def _to_rest_object(self):
        rest = super()._to_rest_object()
        rest.properties.properties["propertyBag"] = {"securityType": self._security_type}
        return rest


class AzureRMAMLCompute(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(
            **azure_ml.WORKSPACE_ARGS,
            name=dict(type="str", required=True),
            location=dict(type="str"),
            size=dict(type="str", default="Standard_D4s_v5"),
            min_instances=dict(type="int", default=0),
            max_instances=dict(type="int", default=1),
            idle_time_before_scale_down=dict(type="int", default=300),
            tier=dict(type="str", default="dedicated", choices=["dedicated", "low_priority"]),
            security_type=dict(
                type="str", default="Standard", choices=["Standard", "TrustedLaunch"]
            ),
            identity_ids=dict(type="list", elements="str", default=[]),
            require_nested_virtualization=dict(type="bool", default=True),
            tags=dict(type="dict"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
        )
        self.results = dict(changed=False)
        super().__init__(self.module_arg_spec, supports_check_mode=True, supports_tags=False)

    def exec_module(self, **kwargs):
        if AZURE_SDK_IMPORT_ERROR:
            self.fail(missing_required_lib("azure-ai-ml"), exception=AZURE_SDK_IMPORT_ERROR)
        params = self.module.params
        self._check_arguments(params)
        self.ml = azure_ml.workspace_client(self)
        existing = self._existing()
        if params["state"] == "absent":
            if existing is not None:
                self.results["changed"] = True
                if not self.check_mode:
                    self.ml.compute.begin_delete(params["name"]).result()
            return self.results

        size_entry = self._preflight(params, existing)
        wanted = self._wanted(params)
        before = _summary(existing) if existing is not None else None
        if before is not None:
            self._refuse_immutable_changes(before, wanted)
        changed = before is None or any(before.get(k) != v for k, v in wanted.items())
        self.results.update(
            changed=changed, vm_size=size_entry, prices=vm_sizes.vm_prices(size_entry)
        )
        if self.module._diff:
            self.results["diff"] = dict(before=before or {}, after={**(before or {}), **wanted})
        if changed and not self.check_mode:
            self.ml.compute.begin_create_or_update(self._entity(params)).result()
            existing = self._existing()
        self.results["compute"] = _summary(existing) if existing is not None else wanted
        return self.results

    def _check_arguments(self, params):
        if not _NAME.match(params["name"]):
            self.fail(
                f"name '{params['name']}' is not a valid compute name: use 3-24 letters, digits and "
                "hyphens, starting with a letter and not ending with a hyphen."
            )
        if (
            params["min_instances"] < 0
            or params["max_instances"] < 1
            or params["min_instances"] > params["max_instances"]
        ):
            self.fail(
                f"min_instances ({params['min_instances']}) and max_instances ({params['max_instances']}) "
                "must satisfy 0 <= min_instances <= max_instances and max_instances >= 1."
            )
        if params["idle_time_before_scale_down"] < 0:
            self.fail("idle_time_before_scale_down must be zero or more seconds.")
        if params["require_nested_virtualization"] and params["security_type"] == "TrustedLaunch":
            self.fail(
                "security_type TrustedLaunch cannot run the WAA container: Trusted Launch VMs do not "
                "support nested virtualization, so the Windows VM inside it never boots (the job stays "
                "in Running with no progress). Use security_type: Standard."
            )

    def _existing(self):
        try:
            return azure_ml.compute_resource(self.ml, self.module.params["name"])
        except ResourceNotFoundError:
            return None

    def _preflight(self, params, existing):
        sizes = {
            s.name.lower(): s
            for s in self.ml.compute.list_sizes(
                location=params["location"], compute_type="AmlCompute"
            )
        }
        entry = sizes.get(params["size"].lower())
        if entry is None:
            self.fail(
                f"VM size {params['size']} is not offered for Azure ML compute in this workspace's "
                f"region. Sizes with nested virtualization there: "
                f"{', '.join(sorted(s.name for s in sizes.values() if vm_sizes.nested_virtualization(s.name))) or 'none'}."
            )
        size_entry = vm_sizes.size_entry(entry)
        nested = vm_sizes.nested_virtualization(size_entry["name"])
        if params["require_nested_virtualization"] and not nested:
            reason = "does not support" if nested is False else "is not known to support"
            self.fail(
                f"VM size {size_entry['name']} {reason} nested virtualization, which the WAA container needs "
                "(it runs Windows under KVM). Use a Dv3/Dsv3/Ev3/Dv4/Dv5-series size such as "
                "Standard_D4s_v5, or set require_nested_virtualization: false if you verified it."
            )
        if params["tier"] == "low_priority" and size_entry["lowPriorityCapable"] is False:
            self.fail(
                f"VM size {size_entry['name']} cannot run as low priority; use tier: dedicated."
            )
        self._check_quota(params, size_entry, existing)
        return size_entry

    def _check_quota(self, params, size, existing):
        current_nodes = 0
        if existing is not None:
            scale = existing.properties.properties.scale_settings
            current_nodes = scale.max_node_count if scale else 0
        requested = (params["max_instances"] - current_nodes) * size["vCPUs"]
        if requested <= 0:
            return
        if params["tier"] == "low_priority":
            quotas = ("total cluster lowpriority regional vcpus",)
        else:
            quotas = (size["family"].lower(), "total cluster dedicated regional vcpus")
        for usage in self.ml.compute.list_usage(location=self.module.params["location"]):
            name = vm_sizes.sdk_field(usage, "name", "name")
            value = (
                name.get("value") if isinstance(name, dict) else getattr(name, "value", "")
            ) or ""
            if value.lower() not in quotas:
                continue
            limit = vm_sizes.sdk_field(usage, "limit", "limit")
            used = vm_sizes.sdk_field(usage, "current_value", "currentValue") or 0
            free = limit - used
            if requested > free:
                self.fail(
                    f"{params['max_instances']} x {size['name']} needs "
                    f"{params['max_instances'] * size['vCPUs']} vCPUs of the quota '{value}', which is "
                    f"{limit} with {used} in use. Lower max_instances to "
                    f"{max(free // size['vCPUs'], 0)}, choose another size family, or request a quota increase."
                )

    def _wanted(self, params):
        return {
            "size": params["size"].upper(),
            "tier": params["tier"],
            "min_instances": params["min_instances"],
            "max_instances": params["max_instances"],
            "idle_time_before_scale_down": params["idle_time_before_scale_down"],
            "security_type": params["security_type"],
            "identity_ids": sorted(i.lower() for i in params["identity_ids"]),
            "tags": params["tags"] or {},
        }

    def _refuse_immutable_changes(self, before, wanted):
        for key in ("size", "tier", "security_type"):
            if before.get(key) != wanted[key]:
                self.fail(
                    f"compute {self.module.params['name']} exists with {key} {before.get(key)}; it cannot "
                    f"change to {wanted[key]} in place. Delete the cluster (state: absent) or use another name."
                )

    def _entity(self, params):
        identity = None
        if params["identity_ids"]:
            identity = IdentityConfiguration(
                type="user_assigned",
                user_assigned_identities=[
                    ManagedIdentityConfiguration(resource_id=i) for i in params["identity_ids"]
                ],
            )
        return _ClusterWithSecurityType(
            security_type=params["security_type"],
            name=params["name"],
            size=params["size"],
            min_instances=params["min_instances"],
            max_instances=params["max_instances"],
            idle_time_before_scale_down=params["idle_time_before_scale_down"],
            tier=params["tier"],
            identity=identity,
            tags=params["tags"],
        )


def _summary(rest):
    aml = rest.properties.properties
    scale = aml.scale_settings
    idle = scale.node_idle_time_before_scale_down if scale else None
    identity = rest.identity
    user_assigned = sorted(
        k.lower() for k in ((identity.user_assigned_identities or {}) if identity else {})
    )
    bag = aml.get("propertyBag") or {}
    return {
        "size": (aml.vm_size or "").upper(),
        "tier": "low_priority" if (aml.vm_priority or "").lower() == "lowpriority" else "dedicated",
        "min_instances": scale.min_node_count if scale else 0,
        "max_instances": scale.max_node_count if scale else 0,
        "idle_time_before_scale_down": int(idle.total_seconds())
        if hasattr(idle, "total_seconds")
        else _seconds(idle),
        "security_type": bag.get("securityType", "Standard"),
        "identity_ids": user_assigned,
        "tags": rest.tags or {},
        "provisioning_state": rest.properties.provisioning_state,
        "current_node_count": getattr(aml, "current_node_count", None),
    }


def _seconds(iso_duration):
    if not iso_duration:
        return 0
    match = re.match(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$", str(iso_duration))
    if not match:
        return 0
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return int(hours * 3600 + minutes * 60 + seconds)


def main():
    AzureRMAMLCompute()


if __name__ == "__main__":
    main()
