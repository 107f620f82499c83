"""Blobs copied onto a simulated node's disk, read as the node's identities read them: what an
Azure ML ``uri_folder`` mount and a Batch resource file have in common.

``open_container`` finds the container and checks that one of the principals holds a data role
that reads blobs on it (Storage Blob Data Reader or wider, at the container or above), or that
the container allows anonymous reads; ``copy_prefix`` and ``copy_blob`` write the bytes, block
by block, never the whole blob in memory. Each failure is a ``BlobCopyError`` of one ``reason``
that the caller turns into its service's own error code.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localazure.authorization.access import is_allowed
from localazure.core.context import Context
from localazure.storage import blobs
from localazure.storage.accounts import find_account

BLOB_READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH

# Why a copy failed.
CONTAINER_MISSING = "container_missing"
ACCESS_DENIED = "access_denied"
BLOB_MISSING = "blob_missing"
OUTSIDE_TARGET = "outside_target"


class BlobCopyError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class Container:
    account: str
    name: str
    scope: str  # its resource id, the scope role assignments are checked against
    public_access: str | None


def container_scope(account: dict[str, Any], container: str) -> str:
    return f"{account['id']}/blobServices/default/containers/{container}"


def open_container(
    ctx: Context,
    account_name: str,
    container: str,
    principal_ids: list[str],
    *,
    anonymous: str | None = None,
) -> Container:
    """The container, when one of ``principal_ids`` may read its blobs. Without principals the
    read is anonymous: allowed when the container's public access level is ``anonymous``
    (``container`` to list it, ``blob`` or ``container`` to read a named blob)."""
    account = find_account(ctx, account_name)
    record = blobs.get_container(ctx, account_name, container) if account else None
    if account is None or record is None:
        raise BlobCopyError(
            CONTAINER_MISSING,
            f"container '{container}' of storage account '{account_name}' does not exist",
        )
    found = Container(
        account["name"], container, container_scope(account, container), record.get("public_access")
    )
    if principal_ids:
        if any(is_allowed(ctx, p, BLOB_READ, found.scope, data=True) for p in principal_ids):
            return found
        raise BlobCopyError(
            ACCESS_DENIED,
            f"the identity may not read the blobs of {found.scope} "
            "(AuthorizationPermissionMismatch)",
        )
    levels = {"container": ("container",), "blob": ("blob", "container")}
    if anonymous and found.public_access in levels.get(anonymous, ()):
        return found
    raise BlobCopyError(
        ACCESS_DENIED,
        f"container '{container}' of storage account '{account_name}' allows no anonymous "
        "access and no identity was given",
    )


def copy_prefix(
    ctx: Context,
    source: Container,
    prefix: str,
    target: Path,
    *,
    keep_names: bool,
    mode: int = READ_ONLY,
) -> list[Path]:
    """Every blob whose name starts with ``prefix`` into ``target``: under its full name
    (``keep_names``, as Batch keeps the blobs' structure) or under the rest of its name after
    the prefix (an Azure ML mount of the prefix). Returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for blob in blobs.list_blobs(ctx, source.account, source.name):
        name = blob["name"]
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        relative = name if keep_names else name[len(prefix) :]
        written.append(_write(ctx, source, blob, _inside(target, relative), mode))
    return written


def copy_blob(
    ctx: Context, source: Container, name: str, destination: Path, *, mode: int = READ_ONLY
) -> Path:
    blob = blobs.get_blob(ctx, source.account, source.name, name)
    if blob is None:
        raise BlobCopyError(
            BLOB_MISSING, f"blob '{name}' of container '{source.name}' does not exist"
        )
    return _write(ctx, source, blob, destination, mode)


def _inside(target: Path, relative: str) -> Path:
    destination = (target / relative).resolve()
    if not destination.is_relative_to(target.resolve()):
        raise BlobCopyError(OUTSIDE_TARGET, f"'{relative}' would be written outside {target}")
    return destination


def _write(ctx: Context, source: Container, blob: dict[str, Any], path: Path, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    with open(path, "wb") as out:
        if blob["size"]:
            for chunk in blobs.read_range(ctx, source.account, blob, 0, blob["size"] - 1):
                out.write(chunk)
    os.chmod(path, mode)
    return path
