"""Job inputs mounted into the container: ``uri_folder`` inputs on a datastore
(``azureml://datastores/<name>/paths/<path>``), read with the compute's managed identity.

When a job's container starts, each such input becomes a folder under the run's directory
(``cap/data-capability/wd/INPUT_<name>``, as AML names its mount points), its path in
``AZURE_ML_INPUT_<name>`` and in place of ``${{inputs.<name>}}`` in the command. The blobs under
the path are copied there and made read-only (AML's ``ro_mount`` is a blobfuse mount: the
emulator copies, which for its small synthetic images costs nothing; see docs/emulator.md). An
input of a path that holds no blob mounts as an empty folder, as blobfuse shows it.

The identity must hold a data role that reads blobs (Storage Blob Data Reader) on the container;
otherwise the job fails before its process starts, as AML fails a mount it may not read.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from localazure.authorization.access import is_allowed
from localazure.core.context import Context
from localazure.ml import datastores
from localazure.storage import blobs
from localazure.storage.accounts import find_account

BLOB_READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
FOLDER_TYPES = ("uri_folder",)
MOUNT_MODES = ("ReadOnlyMount", "Download", "ro_mount", "download", None)
_PLACEHOLDER = re.compile(r"\$\{\{\s*inputs\.([A-Za-z0-9_]+)\s*\}\}")


class InputError(Exception):
    """An input the job cannot have: ``code`` is AML's inner error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def mount(
    ctx: Context,
    workspace: dict[str, Any],
    inputs: dict[str, Any],
    principal_ids: list[str],
    mount_root: Path,
) -> dict[str, str]:
    """Mount every folder input; return input name -> mounted path."""
    mounted: dict[str, str] = {}
    for name, spec in (inputs or {}).items():
        kind = str((spec or {}).get("jobInputType") or "").lower()
        if kind not in FOLDER_TYPES:
            continue
        if spec.get("mode") not in MOUNT_MODES:
            raise InputError(
                "InputModeNotSupported",
                f"Input '{name}': mode {spec.get('mode')!r} is not supported by localazure; "
                "use ro_mount or download.",
            )
        target = mount_root / f"INPUT_{name}"
        _materialize(ctx, workspace, name, str(spec.get("uri") or ""), principal_ids, target)
        mounted[name] = str(target)
    return mounted


def environment(mounted: dict[str, str]) -> dict[str, str]:
    return {f"AZURE_ML_INPUT_{name}": path for name, path in mounted.items()}


def substitute(command: str, mounted: dict[str, str]) -> str:
    """The command with ``${{inputs.<name>}}`` replaced by the mounted paths."""
    return _PLACEHOLDER.sub(lambda m: mounted.get(m[1], m[0]), command)


def _materialize(
    ctx: Context,
    workspace: dict[str, Any],
    name: str,
    uri: str,
    principal_ids: list[str],
    target: Path,
) -> None:
    parsed = datastores.parse_uri(uri)
    if parsed is None:
        raise InputError(
            "InvalidInputUri",
            f"Input '{name}': {uri!r} is not an azureml://datastores/<name>/paths/<path> URI.",
        )
    store_name, path = parsed
    store = datastores.get(ctx, workspace, store_name)
    if store is None:
        raise InputError(
            "DatastoreNotFound",
            f"Input '{name}': datastore '{store_name}' is not in workspace '{workspace['name']}'.",
        )
    props = store["properties"]
    account = find_account(ctx, props["accountName"])
    container = props["containerName"]
    if account is None or blobs.get_container(ctx, account["name"], container) is None:
        raise InputError(
            "DataAccessError",
            f"Input '{name}': container '{container}' of storage account "
            f"'{props['accountName']}' (datastore '{store_name}') does not exist.",
        )
    scope = f"{account['id']}/blobServices/default/containers/{container}"
    if not any(is_allowed(ctx, p, BLOB_READ, scope, data=True) for p in principal_ids):
        raise InputError(
            "DataAccessAuthorizationFailure",
            f"Input '{name}': the compute's identity may not read {scope} (mounting "
            f"azureml://datastores/{store_name}/paths/{path}): AuthorizationPermissionMismatch. "
            "Grant it Storage Blob Data Reader on the container (role waa_image, "
            "waa_image_readers).",
        )
    prefix = f"{path}/" if path else ""
    target.mkdir(parents=True, exist_ok=True)
    for blob in blobs.list_blobs(ctx, account["name"], container):
        if not blob["name"].startswith(prefix) or blob["name"].endswith("/"):
            continue
        destination = target / blob["name"][len(prefix) :]
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            os.chmod(destination, stat.S_IRUSR | stat.S_IWUSR)
        with open(destination, "wb") as out:
            if blob["size"]:
                for chunk in blobs.read_range(ctx, account["name"], blob, 0, blob["size"] - 1):
                    out.write(chunk)
        os.chmod(destination, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
