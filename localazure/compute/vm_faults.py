"""Faults of the VMs themselves, injected through the admin API
(``POST /_localazure/compute/faults``), each striking the first running VM whose name matches
``vm`` (a regular expression) once ``after_s`` seconds have passed since the fault was added:

- ``ssh_drop``: every SSH connection of the VM is dropped (its sessions end; containers run on)
- ``ssh_refused``: the VM's SSH server stops listening for ``duration_s`` (connections refused)
- ``evict``: the VM is deallocated as a Spot eviction does: containers killed, node released
- ``delete``: the VM is deleted (with what its ``deleteOption``s say), containers killed

The container faults of the AML tier (``never_starts``, ``stuck``, ``crash``, ``slow_start``)
come from ``nodes.workload_faults`` and match the container's name.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from localazure.core.context import Context
from localazure.nodes.workload_faults import regex_option, seconds_option

KIND = "compute-fault"
FAULTS = ("ssh_drop", "ssh_refused", "evict", "delete")


def add(ctx: Context, spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("fault")
    if kind not in FAULTS:
        raise ValueError(f"'fault' must be one of {list(FAULTS)}, not {kind!r}")
    pattern = regex_option(spec, "vm")
    fault = {
        "id": uuid.uuid4().hex[:12],
        "fault": kind,
        "vm": pattern,
        "after_s": seconds_option(spec, "after_s", 0.0),
        "duration_s": seconds_option(spec, "duration_s", 5.0),
        "added_at": ctx.clock(),
        "hit": None,
    }
    ctx.store.put(KIND, fault["id"], fault)
    return fault


def list_all(ctx: Context) -> list[dict[str, Any]]:
    return ctx.store.values(KIND)


def clear(ctx: Context) -> None:
    ctx.store.delete_prefix(KIND, "")


def due(ctx: Context, vm_name: str, now: float) -> list[dict[str, Any]]:
    """Faults that strike this VM now (each marked as hit, so it strikes once)."""
    struck = []
    for fault in list_all(ctx):
        if (
            fault["hit"] is None
            and now >= fault["added_at"] + fault["after_s"]
            and re.search(fault["vm"], vm_name)
        ):
            fault["hit"] = {"vm": vm_name, "at": now}
            ctx.store.put(KIND, fault["id"], fault)
            struck.append(fault)
    return struck


def refusing(ctx: Context, vm_name: str, now: float) -> bool:
    """True while an ``ssh_refused`` fault keeps the VM's SSH server down."""
    return any(
        f["fault"] == "ssh_refused"
        and f["hit"]
        and f["hit"]["vm"] == vm_name
        and now < f["hit"]["at"] + f["duration_s"]
        for f in list_all(ctx)
    )
