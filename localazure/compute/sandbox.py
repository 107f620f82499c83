"""A VM's disk on the host: a directory per OS disk under ``<state>/compute/disks/``, holding
the admin user's home, the ``docker`` of the emulator on ``PATH`` (``bin/docker``), and the
VM's Docker state (``var/lib/docker``: pulled images, containers and their logs). The disk
survives deallocate and start; it goes with the disk resource."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from localazure.core.context import Context

DOCKER_SHIM = """#!/bin/sh
LOCALAZURE_VM_ROOT="{root}" exec "{python}" -m localazure.compute.docker_cli "$@"
"""


def disk_dir(ctx: Context, disk_id: str) -> Path:
    digest = hashlib.sha256(disk_id.lower().encode()).hexdigest()[:20]
    return ctx.settings.state_dir / "compute" / "disks" / digest


def prepare(ctx: Context, disk_id: str, admin_user: str, source: Path | None = None) -> Path:
    """Create the disk (a copy of ``source``, an image's disk, when given)."""
    root = disk_dir(ctx, disk_id)
    if source is not None and source.is_dir() and not root.exists():
        shutil.copytree(source, root, symlinks=True)
    for sub in ("bin", "var/lib/docker/containers", f"home/{admin_user}"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shim = root / "bin" / "docker"
    shim.write_text(DOCKER_SHIM.format(root=root, python=sys.executable), encoding="utf-8")
    shim.chmod(0o755)
    return root


def home(root: Path, admin_user: str) -> Path:
    return root / "home" / admin_user


def remove(ctx: Context, disk_id: str) -> None:
    shutil.rmtree(disk_dir(ctx, disk_id), ignore_errors=True)


def write_agent(ctx: Context, root: Path, secret: str) -> None:
    """What the VM's ``docker`` needs to reach its engine, readable by the VM's user only."""
    path = root / "var" / "lib" / "localazure" / "agent.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(
            {"endpoint": ctx.endpoint, "secret": secret, "ca": str(ctx.settings.ca_bundle)}, f
        )


def remove_orphans(ctx: Context, owner_ids: list[str]) -> None:
    """Drop disk directories no disk or image owns any more (after a reset, say)."""
    root = ctx.settings.state_dir / "compute" / "disks"
    if not root.is_dir():
        return
    kept = {disk_dir(ctx, owner).name for owner in owner_ids}
    for entry in root.iterdir():
        if entry.name not in kept:
            shutil.rmtree(entry, ignore_errors=True)
