"""A container's file system on the host: ``<state>/containerinstance/<group hash>/<container>/``
holds ``root/`` (the container's working directory, standing for ``/``) and ``logs/`` (one log per
start). Each volume mount is a symlink at ``root/<mountPath>`` to the volume's storage: an Azure
File share's directory (``storage.shares.share_dir``), or the group's ``emptyDir`` directory.

A local process cannot see ``/mnt/work`` without root, so the emulator maps paths instead: every
occurrence of a mount path in the command's arguments and in environment values is rewritten to
its place in the sandbox (``/mnt/work/out.txt`` becomes ``<root>/mnt/work/out.txt``); so do the
variables ``PWD`` and ``HOME``. Paths a program builds at run time from other pieces are not seen.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localazure.core.context import Context
from localazure.storage import shares
from localazure.storage.accounts import account_keys, find_account


class MountError(Exception):
    """A volume cannot be mounted; ``message`` is what the container's events say."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Sandbox:
    root: Path
    logs: Path
    mounts: dict[str, Path]  # mount path in the container -> its place in the sandbox

    def rewrite(self, text: str) -> str:
        """``text`` with every mount path replaced by its place in the sandbox."""
        for mount_path in sorted(self.mounts, key=len, reverse=True):
            pattern = re.compile(
                r"(?<![\w./-])" + re.escape(mount_path.rstrip("/")) + r"(?=/|$|[^\w.-])"
            )
            text = pattern.sub(lambda _m, p=mount_path: str(self.mounts[p]), text)
        return text


def group_dir(ctx: Context, group_id: str) -> Path:
    digest = hashlib.sha256(group_id.lower().encode()).hexdigest()[:20]
    return ctx.settings.state_dir / "containerinstance" / digest


def _azure_file_target(ctx: Context, volume: dict[str, Any], key: str) -> Path:
    spec = volume["azureFile"]
    account = find_account(ctx, spec["storageAccountName"])
    if account is None:
        raise MountError(
            f"Failed to mount Azure File volume '{volume['name']}': storage account "
            f"'{spec['storageAccountName']}' does not exist."
        )
    if not any(hmac.compare_digest(key, k) for k in account_keys(ctx, account["id"]).values()):
        raise MountError(
            f"Failed to mount Azure File volume '{volume['name']}': the storage account key of "
            f"'{account['name']}' is not valid (mount error(13): Permission denied)."
        )
    if shares.get(ctx, account, spec["shareName"]) is None:
        raise MountError(
            f"Failed to mount Azure File volume '{volume['name']}': share '{spec['shareName']}' "
            f"does not exist in storage account '{account['name']}' (mount error(2): No such "
            "file or directory)."
        )
    return shares.share_dir(ctx, account["name"], spec["shareName"])


def check_mounts(ctx: Context, group: dict[str, Any], storage_keys: dict[str, str]) -> None:
    """Raise ``MountError`` when any Azure File volume of the group cannot be mounted."""
    for volume in group["properties"]["volumes"]:
        if "azureFile" in volume:
            _azure_file_target(ctx, volume, storage_keys.get(volume["name"], ""))


def prepare(
    ctx: Context, group: dict[str, Any], container: dict[str, Any], storage_keys: dict[str, str]
) -> Sandbox:
    base = group_dir(ctx, group["id"])
    root = base / container["name"] / "root"
    root.mkdir(parents=True, exist_ok=True)
    volumes = {v["name"]: v for v in group["properties"]["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container["properties"].get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        if "azureFile" in volume:
            target = _azure_file_target(ctx, volume, storage_keys.get(volume["name"], ""))
        else:
            target = base / "_volumes" / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
        mount_path = "/" + mount["mountPath"].strip("/")
        link = root / mount_path.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            if link.is_symlink() or link.is_file():
                link.unlink()
            else:
                shutil.rmtree(link)
        link.symlink_to(target, target_is_directory=True)
        mounts[mount_path] = link
    return Sandbox(root, base / container["name"] / "logs", mounts)


def remove(ctx: Context, group_id: str) -> None:
    shutil.rmtree(group_dir(ctx, group_id), ignore_errors=True)
