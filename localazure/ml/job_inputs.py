"""Job inputs mounted into the container: ``uri_folder`` inputs on a datastore
(``azureml://datastores/<name>/paths/<path>``), read with the compute's managed identity.

When a job's container starts, each such input becomes a folder under the run's directory
(``cap/data-capability/wd/INPUT_<name>``, as AML names its mount points), its path in
``AZURE_ML_INPUT_<name>`` and in place of ``${{inputs.<name>}}`` in the command. The blobs under
the path are copied there (``storage.blob_copy``) and made read-only (AML's ``ro_mount`` is a
blobfuse mount: the emulator copies, which for its small synthetic images costs nothing; see docs/emulator.md). An
input of a path that holds no blob mounts as an empty folder, as blobfuse shows it.

The identity must hold a data role that reads blobs (Storage Blob Data Reader) on the container;
otherwise the job fails before its process starts, as AML fails a mount it may not read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from localazure.core.context import Context
from localazure.ml import datastores
from localazure.storage import blob_copy

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
    try:
        source = blob_copy.open_container(
            ctx, props["accountName"], props["containerName"], principal_ids
        )
        blob_copy.copy_prefix(ctx, source, f"{path}/" if path else "", target, keep_names=False)
    except blob_copy.BlobCopyError as err:
        if err.reason == blob_copy.CONTAINER_MISSING:
            raise InputError(
                "DataAccessError",
                f"Input '{name}': container '{props['containerName']}' of storage account "
                f"'{props['accountName']}' (datastore '{store_name}') does not exist.",
            ) from None
        if err.reason == blob_copy.ACCESS_DENIED:
            raise InputError(
                "DataAccessAuthorizationFailure",
                f"Input '{name}', mounting azureml://datastores/{store_name}/paths/{path} with "
                f"the compute's identity: {err.message}. Grant it Storage Blob Data Reader on "
                "the container (role waa_image, waa_image_readers).",
            ) from None
        raise InputError("DataAccessError", f"Input '{name}': {err.message}.") from None
