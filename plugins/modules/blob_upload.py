#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: blob_upload
short_description: Upload a folder to a blob container once, with progress and resume
version_added: "0.2.0"
description:
  - Uploads every regular file under I(src) (or the single file I(src)) as a block blob named
    I(prefix) plus its path relative to I(src), with azure-storage-blob.
  - Idempotent by content. Each blob carries its file's SHA-256 in its metadata (C(sha256)); a
    blob of the same size and checksum is not uploaded again, so a second run reports
    C(changed=false).
  - Resumable. Block ids derive from the file's checksum and the block's index. A run that was
    interrupted left its blocks staged (uncommitted) in the service; the next run reads the
    blob's block list, sends only the missing blocks and commits. Blocks staged for a file that
    has changed since are never reused.
  - Progress goes to I(progress_file), one JSON line per block (C(tail -f) it), and to the
    module log.
  - Unlike M(azure.azcollection.azure_rm_storageblob), which uploads a file in one call and
    compares only by name, this module verifies content and resumes, which matters for a
    30 GB disk image.
options:
  storage_account_name:
    description: Name of the storage account.
    type: str
    required: true
  resource_group:
    description: Resource group of the storage account.
    type: str
    required: true
  container:
    description: Existing blob container to upload into.
    type: str
    required: true
  src:
    description: Local folder (or file) to upload.
    type: path
    required: true
  prefix:
    description: Prefix of every blob name (for example C(storage/)); empty for none.
    type: str
    default: ""
  auth_mode:
    description:
      - C(login) uses the module's Entra credentials (the caller needs Storage Blob Data
        Contributor on the container); C(key) reads the account key through the management
        API (the account must allow shared key access).
    type: str
    choices: [login, key]
    default: login
  block_size_mb:
    description: Size of each block in MiB (1 to 4000).
    type: int
    default: 64
  max_concurrency:
    description: Blocks sent in parallel.
    type: int
    default: 4
  metadata:
    description: Further metadata set on every uploaded blob (C(sha256) is always set).
    type: dict
    default: {}
  progress_file:
    description: File that receives one JSON line per progress step; omitted, none is written.
    type: path
  permission_wait_s:
    description:
      - How long to wait for a fresh role assignment to take effect on the data plane (Azure
        takes up to a few minutes), so requests refused with C(AuthorizationPermissionMismatch)
        are retried until then.
    type: int
    default: 300
extends_documentation_fragment:
  - azure.azcollection.azure
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
notes:
  - Supports C(--check); in check mode the checksums are computed and compared, nothing is sent.
  - The blobs are block blobs of at most 50,000 blocks, so I(block_size_mb) bounds the file
    size (64 MiB blocks allow 3.2 TB).
"""

EXAMPLES = r"""
# waa_prepared_image: the folder WAA's --prepare-image filled
# (WindowsAgentArena/src/win-arena-container/vm/storage).
- name: Upload WAA's prepared image
  openadapt.azure_eval.blob_upload:
    resource_group: openadapt-agents
    storage_account_name: openadaptwaaimages
    container: waa-golden-image
    src: "{{ waa_prepared_image }}"
    prefix: storage/
    progress_file: .state/waa_image/progress.jsonl
"""

RETURN = r"""
container_url:
  description: URL of the container.
  returned: always
  type: str
  sample: https://openadaptwaaimages.blob.core.windows.net/waa-golden-image
files:
  description: One entry per file, with C(blob), C(size), C(sha256), C(md5), C(blocks_total),
    C(blocks_reused), C(bytes_sent) and C(action) (C(unchanged), C(uploaded) or C(resumed)).
  returned: always
  type: list
  elements: dict
bytes_total:
  description: Size of all files.
  returned: always
  type: int
bytes_uploaded:
  description: Bytes sent by this run (would be sent, in check mode).
  returned: always
  type: int
bytes_skipped:
  description: Bytes not sent because the blob was complete or its blocks were already staged.
  returned: always
  type: int
seconds:
  description: Duration of the run.
  returned: always
  type: float
mib_per_s:
  description: Upload throughput of this run.
  returned: always
  type: float
"""

from pathlib import Path

try:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient
except ImportError:
    pass

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)

from ansible_collections.openadapt.azure_eval.plugins.module_utils import blob_upload

PERMISSION_ERRORS = ("AuthorizationPermissionMismatch", "AuthorizationFailure")


class AzureRMBlobUpload(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(
            storage_account_name=dict(type="str", required=True),
            resource_group=dict(type="str", required=True),
            container=dict(type="str", required=True),
            src=dict(type="path", required=True),
            prefix=dict(type="str", default=""),
            auth_mode=dict(type="str", choices=["login", "key"], default="login"),
            block_size_mb=dict(type="int", default=64),
            max_concurrency=dict(type="int", default=4),
            metadata=dict(type="dict", default={}),
            progress_file=dict(type="path"),
            permission_wait_s=dict(type="int", default=300),
        )
        self.results = dict(changed=False)
        super().__init__(self.module_arg_spec, supports_check_mode=True, supports_tags=False)

    def exec_module(self, **kwargs):
        params = self.module.params
        src = Path(params["src"])
        if not src.exists():
            self.fail(f"src {src} does not exist: give the folder WAA's --prepare-image filled.")
        if not 1 <= params["block_size_mb"] <= 4000:
            self.fail(f"block_size_mb must be between 1 and 4000, got {params['block_size_mb']}.")
        if params["max_concurrency"] < 1:
            self.fail("max_concurrency must be at least 1.")
        container = self._container_client()
        self.results["container_url"] = container.url
        progress = blob_upload.Progress(params["progress_file"], self.log)
        result = self._with_permission_wait(
            lambda: blob_upload.upload_folder(
                container,
                src,
                prefix=params["prefix"],
                block_size=params["block_size_mb"] * 1024 * 1024,
                concurrency=params["max_concurrency"],
                metadata={str(k): str(v) for k, v in params["metadata"].items()},
                progress=progress,
                check_mode=self.check_mode,
            )
        )
        self.results.update(result.summary(), changed=result.changed)
        return self.results

    def _container_client(self):
        params = self.module.params
        name, group = params["storage_account_name"], params["resource_group"]
        try:
            account = self.storage_client.storage_accounts.get_properties(group, name)
        except ResourceNotFoundError:
            self.fail(f"storage account {name} was not found in resource group {group}.")
        if params["auth_mode"] == "key":
            if account.allow_shared_key_access is False:
                self.fail(
                    f"storage account {name} does not allow shared key access: use auth_mode "
                    "login (and Storage Blob Data Contributor on the container)."
                )
            keys = self.storage_client.storage_accounts.list_keys(group, name)
            credential = {"account_name": name, "account_key": keys.keys[0].value}
        else:
            credential = self.azure_auth.azure_credential_track2
        service = BlobServiceClient(account.primary_endpoints.blob, credential=credential)
        container = service.get_container_client(params["container"])
        try:
            container.get_container_properties()
        except ResourceNotFoundError:
            self.fail(
                f"container {params['container']} does not exist in storage account {name}; "
                "create it first (role openadapt.azure_eval.waa_image does)."
            )
        except HttpResponseError as err:
            if getattr(err, "error_code", None) not in PERMISSION_ERRORS:
                self.fail(f"reading container {params['container']} failed: {err.message}")
        return container

    def _with_permission_wait(self, call):
        from tenacity import retry, retry_if_exception, stop_after_delay, wait_fixed

        def refused(err: BaseException) -> bool:
            return (
                isinstance(err, HttpResponseError)
                and getattr(err, "error_code", None) in PERMISSION_ERRORS
            )

        retrying = retry(
            retry=retry_if_exception(refused),
            stop=stop_after_delay(self.module.params["permission_wait_s"]),
            wait=wait_fixed(10),
            reraise=True,
        )(call)
        try:
            return retrying()
        except HttpResponseError as err:
            if refused(err):
                self.fail(
                    f"the caller may not write blobs in {self.module.params['container']}: grant it "
                    "Storage Blob Data Contributor on the container (role assignments can take a "
                    f"few minutes to apply). {err.error_code}"
                )
            self.fail(f"upload failed: {getattr(err, 'error_code', '')}: {err.message}")


def main():
    AzureRMBlobUpload()


if __name__ == "__main__":
    main()
