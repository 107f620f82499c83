#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation of the aci_follow action plugin (plugins/action/aci_follow.py), which runs on the
# controller; as for every action plugin, this module file only carries the documentation.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: aci_follow
short_description: Stream a container group's output until its container exits
version_added: "0.3.0"
description:
  - Follows an Azure Container Instances container group from the controller. It prints its
    container's output as it comes, waits for the exit, and reports the exit code and the cost.
  - The container group is deleted when following ends in anything but the container's exit
    (Ctrl-C, a failed start, a timeout), so an interrupted run leaves nothing running.
options:
  resource_group:
    description: Resource group of the container group.
    type: str
    required: true
  name:
    description: The container group.
    type: str
    required: true
  container:
    description: The container to follow (default the group's only container).
    type: str
  poll_interval:
    description: Seconds between reads of the container's state and logs.
    type: float
    default: 1.0
  timeout:
    description: Seconds before giving up (the group is then deleted).
    type: float
  price_per_vcpu_second:
    description: Price of one vCPU second in USD, for RV(cost_usd).
    type: float
    default: 0.0000135
  price_per_gb_second:
    description: Price of one GB of memory per second in USD.
    type: float
    default: 0.0000015
  secrets:
    description: Values masked in the output.
    type: list
    elements: str
    default: []
attributes:
  action:
    description: Runs on the controller as an action plugin.
    support: full
  check_mode:
    description: Runs nothing in check mode (the task is skipped).
    support: none
  diff_mode:
    description: No diff.
    support: none
  platform:
    description: Runs on the controller.
    support: full
    platforms: all
extends_documentation_fragment:
  - azure.azcollection.azure
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
"""

EXAMPLES = r"""
- name: Start a container group (billed per second while it runs)
  azure.azcollection.azure_rm_containerinstance:
    resource_group: openadapt-agents
    name: waa-run-1
    os_type: linux
    restart_policy: never
    ip_address: none
    containers:
      - name: main
        image: mcr.microsoft.com/azurelinux/base/python:3.12
        cpu: 1
        memory: 1.5
        commands: ["python3", "-c", "print('hello from ACI')"]

- name: Stream the output until the container exits
  openadapt.azure_eval.aci_follow:
    resource_group: openadapt-agents
    name: waa-run-1
    timeout: 3600
  register: aci_run_result

- name: Leave nothing running
  azure.azcollection.azure_rm_containerinstance:
    resource_group: openadapt-agents
    name: waa-run-1
    state: absent
"""

RETURN = r"""
exit_code:
  description: Exit code of the container.
  returned: success
  type: int
state:
  description: Final state of the container.
  returned: success
  type: str
output:
  description: The container's output, secrets masked.
  returned: success
  type: str
started_at:
  description: When the container started.
  returned: success
  type: str
finished_at:
  description: When the container finished.
  returned: success
  type: str
billed_seconds:
  description: Seconds billed.
  returned: success
  type: float
vcpus:
  description: vCPUs of the container group.
  returned: success
  type: float
memory_gb:
  description: Memory of the container group in GB.
  returned: success
  type: float
cost_usd:
  description: Cost of the run in USD.
  returned: success
  type: float
"""
