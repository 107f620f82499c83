"""Azure Container Instances: container groups (``Microsoft.ContainerInstance/containerGroups``)
whose containers run as local processes on the shared container runtime (``localazure.nodes``),
each in a sandbox directory with its Azure File mounts mapped to the shares' storage, billed per
second of vCPU and GB while the group runs.

- ``spec``: the PUT body checked and split into the public resource and its secrets.
- ``pricing``: ACI's per-second prices.
- ``sandbox``: a container's file system on the host and the path mapping of its mounts.
- ``runner``: the groups' lifecycle on the lifecycle loop (start, watch, restart policy, stop).
- ``groups``: the ARM routes; ``admin``: the usage report.
"""

from __future__ import annotations

NAMESPACE = "Microsoft.ContainerInstance"
GROUP_TYPE = f"{NAMESPACE}/containerGroups"
SECRETS_KIND = "aci-secrets"
USAGE_KIND = "aci-usage"
