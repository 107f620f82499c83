"""Simulated nodes and containers, shared by every service that runs workloads on VMs (Azure ML
today; Batch, Virtual Machines and Container Instances next), as moto shares its Docker
utilities and managed-state models.

The interface a service uses:

- ``vm_catalog``: the VM sizes (vCPUs, memory, quota family, prices, nested virtualization);
  ``find(name)``, ``families()``.
- ``pool``: nodes of a ``PoolSpec``: ``acquire`` one for a workload (a free node, preferring one
  with the image, else a new one within the pool's maximum and the regional vCPU quota),
  ``finish`` (idle again), ``release``, ``scale`` (provisioning done, idle scale-down, minimum
  kept), ``release_under`` (delete hook), ``quota_error``, ``report`` (node-seconds and cost);
  the simulated delays (``Timing``) and quotas (``Quota``) are settings of the emulator.
- ``image_pull``: ``resolve`` an image as a principal pulls it (AcrPull enforced),
  ``pull_seconds`` on a node (by size; zero when the node has it), ``pulled`` (the node's cache).
- ``containers``: ``ContainerRuntime`` (a container is a local process running the command,
  e.g. the project's worker and the WAA stand-in), the container's environment, the
  nested-virtualization rule (``needs_nested_virtualization``, ``no_kvm_reason``).
- ``workload_faults``: faults injected through the admin API (``take_fault`` when a workload gets
  a node; ``fault_environment``, ``freezes_process``).
- ``lifecycle``: ``LifecycleLoop``, the background thread that ticks each service's
  ``Workloads`` (``recover(stopped_at)``, ``tick(now)``) with one shared ``ContainerRuntime``.

A service owns its workloads' records and wire format (Azure ML: ``ml.jobs``, ``ml.job_runner``,
``ml.compute_nodes``); these modules know no service.
"""
