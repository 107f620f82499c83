"""A start task's resource files (``startTask.resourceFiles``), put into its working directory
(``<node>/startup/wd``) before its command line runs, as a Batch node downloads them.

Emulated: ``storageContainerUrl`` (every blob of the container, or those whose name starts with
``blobPrefix``, written under ``filePath`` with their full names, as Batch keeps the blobs'
structure) and ``httpUrl`` of a blob (written to ``filePath``), read with the user-assigned
identity ``identityReference.resourceId`` names (it must be one of the pool's; its principal
needs a data role that reads blobs on the container), or anonymously without one (the container's
public access level must allow it); ``fileMode`` (octal, default 0770). Refused when the pool
is created or updated, since the emulator has no equivalent: ``autoStorageContainerName``, a URL
with a query (a SAS), an ``httpUrl`` outside Azure Blob Storage.

A failure ends the start task before its command runs, with Batch's ``failureInfo`` (category
``userError``): ``ResourceContainerNotFound``, ``ResourceContainerAccessDenied``,
``ResourceContainerListMiscError`` (an identity that is not the pool's), ``BlobNotFound``,
``BlobAccessDenied``, ``BlobDownloadMiscError``.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from localazure.batch.pool_model import invalid
from localazure.core.context import Context
from localazure.storage import BLOB_SUFFIX, blob_copy

TARGET = "startTask.resourceFiles"
DEFAULT_MODE = 0o770
_MODE = re.compile(r"^0?[0-7]{3}$")
_SOURCES = ("autoStorageContainerName", "storageContainerUrl", "httpUrl")

CONTAINER_FAILURES = {
    blob_copy.CONTAINER_MISSING: (
        "ResourceContainerNotFound",
        "One of the specified Azure Blob container(s) was not found",
    ),
    blob_copy.ACCESS_DENIED: (
        "ResourceContainerAccessDenied",
        "Access for one of the specified Azure Blob container(s) is denied",
    ),
    blob_copy.OUTSIDE_TARGET: (
        "ResourceFileCreateFailed",
        "A resource file could not be created in the task's working directory",
    ),
}
BLOB_FAILURES = {
    blob_copy.CONTAINER_MISSING: (
        "BlobNotFound",
        "One of the specified Azure Blob(s) is not found",
    ),
    blob_copy.BLOB_MISSING: ("BlobNotFound", "One of the specified Azure Blob(s) is not found"),
    blob_copy.ACCESS_DENIED: (
        "BlobAccessDenied",
        "Access for one of the specified Azure Blob(s) is denied",
    ),
}
FOREIGN_IDENTITY = {
    "storageContainerUrl": (
        "ResourceContainerListMiscError",
        "Miscellaneous error encountered while listing one of the specified Azure Blob "
        "container(s)",
    ),
    "httpUrl": (
        "BlobDownloadMiscError",
        "Miscellaneous error encountered while downloading one of the specified Azure Blob(s)",
    ),
}


class ResourceFileError(Exception):
    """A resource file the node could not get: ``failure`` is Batch's ``failureInfo``."""

    def __init__(self, code: str, message: str, source: str, why: str) -> None:
        super().__init__(f"{code}: {message}")
        self.failure = {
            "category": "userError",
            "code": code,
            "message": message,
            "details": [
                {"name": "ResourceFileSource", "value": source},
                {"name": "Message", "value": why},
            ],
        }


# -- validation (pool create and update) ---------------------------------------------------------


def validate(start_task: dict[str, Any] | None) -> None:
    for index, spec in enumerate((start_task or {}).get("resourceFiles") or []):
        target = f"{TARGET}[{index}]"
        if not isinstance(spec, dict):
            raise invalid("A resource file must be an object.", target)
        given = [name for name in _SOURCES if spec.get(name)]
        if len(given) != 1:
            raise invalid(
                "A resource file needs exactly one of autoStorageContainerName, "
                f"storageContainerUrl and httpUrl; got {given or 'none'}.",
                target,
            )
        source = given[0]
        if source == "autoStorageContainerName":
            raise invalid(
                "autoStorageContainerName is not emulated by localazure (its auto-storage "
                "account's keys are not modelled): give the container's storageContainerUrl "
                "with an identityReference instead.",
                f"{target}.autoStorageContainerName",
            )
        _blob_url(spec[source], source, f"{target}.{source}")
        if spec.get("blobPrefix") and source != "storageContainerUrl":
            raise invalid("blobPrefix is valid only with a container.", f"{target}.blobPrefix")
        if source == "httpUrl" and not spec.get("filePath"):
            raise invalid("filePath is required with httpUrl.", f"{target}.filePath")
        _relative(spec.get("filePath") or "", f"{target}.filePath")
        mode = spec.get("fileMode")
        if mode is not None and not _MODE.match(str(mode)):
            raise invalid(
                f"fileMode '{mode}' is not an octal mode such as 0770.", f"{target}.fileMode"
            )


def _blob_url(url: Any, source: str, target: str) -> tuple[str, str, str]:
    """(account, container, blob) of a blob service URL; blob is empty for a container."""
    parts = urlsplit(str(url))
    if parts.query:
        raise invalid(
            f"{source} '{parts.scheme}://{parts.netloc}{parts.path}' carries a query (a shared "
            "access signature): SAS URLs are not emulated by localazure; read it with an "
            "identityReference of the pool instead.",
            target,
        )
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host.endswith(BLOB_SUFFIX):
        raise invalid(
            f"{source} '{url}' is not an https URL of Azure Blob Storage "
            f"(https://<account>{BLOB_SUFFIX}/...): the emulator's nodes reach no other server.",
            target,
        )
    path = unquote(parts.path).lstrip("/")
    container, _, blob = path.partition("/")
    if not container or (source == "storageContainerUrl" and blob.strip("/")):
        raise invalid(
            f"{source} '{url}' must name a container"
            + (" only (use blobPrefix for a part of it)." if container else "."),
            target,
        )
    if source == "httpUrl" and not blob:
        raise invalid(f"httpUrl '{url}' names no blob.", target)
    return host.removesuffix(BLOB_SUFFIX), container, blob


def _relative(path: str, target: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise invalid(
            f"filePath '{path}' must be relative and stay in the task's working directory.",
            target,
        )
    return relative


# -- materializing on a node ---------------------------------------------------------------------


def materialize(
    ctx: Context, pool: dict[str, Any], start_task: dict[str, Any], workdir: Path
) -> None:
    """Every resource file of ``start_task`` into ``workdir``; raises ``ResourceFileError``."""
    workdir.mkdir(parents=True, exist_ok=True)
    identities = (pool.get("identity") or {}).get("userAssignedIdentities") or {}
    for spec in start_task.get("resourceFiles") or []:
        source = "storageContainerUrl" if spec.get("storageContainerUrl") else "httpUrl"
        url = spec[source]
        account, container, blob = _blob_url(url, source, TARGET)
        principals = []
        reference = (spec.get("identityReference") or {}).get("resourceId")
        if reference:
            found = [v for k, v in identities.items() if k.lower() == reference.lower()]
            if not found:
                code, message = FOREIGN_IDENTITY[source]
                raise ResourceFileError(
                    code,
                    message,
                    url,
                    f"the identity '{reference}' is not one of the pool's user-assigned identities",
                )
            principals = [found[0]["principalId"]]
        mode = int(str(spec.get("fileMode") or oct(DEFAULT_MODE)), 8)
        path = workdir / _relative(spec.get("filePath") or "", TARGET)
        failures = CONTAINER_FAILURES if source == "storageContainerUrl" else BLOB_FAILURES
        try:
            opened = blob_copy.open_container(
                ctx,
                account,
                container,
                principals,
                anonymous="container" if source == "storageContainerUrl" else "blob",
            )
            if source == "storageContainerUrl":
                blob_copy.copy_prefix(
                    ctx, opened, spec.get("blobPrefix") or "", path, keep_names=True, mode=mode
                )
            else:
                blob_copy.copy_blob(ctx, opened, blob, path, mode=mode)
        except blob_copy.BlobCopyError as err:
            code, message = failures.get(err.reason, FOREIGN_IDENTITY[source])
            raise ResourceFileError(code, message, url, err.message) from None
