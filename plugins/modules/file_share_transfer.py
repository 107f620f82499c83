#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: file_share_transfer
short_description: Copy a folder to or from an Azure File share
version_added: "0.3.0"
description:
  - C(direction=upload) copies every regular file under I(local_path) to I(remote_path) of the
    share, creating its directories; a file of the same size and content (MD5) is not sent again.
  - C(direction=download) copies every file under I(remote_path) of the share to I(local_path)
    (nothing to download is not an error; C(files) is then 0).
  - Uses azure-storage-file-share with the storage account's key, read through the management
    API as the module's caller (azcollection has no module for files in a share).
options:
  storage_account_name: {description: Name of the storage account., type: str, required: true}
  resource_group: {description: Its resource group., type: str, required: true}
  share: {description: Name of the file share (it must exist)., type: str, required: true}
  direction: {description: upload or download., type: str, required: true, choices: [upload, download]}
  local_path: {description: The local folder., type: path, required: true}
  remote_path: {description: The folder in the share ('' is its root)., type: str, default: ''}
extends_documentation_fragment:
  - azure.azcollection.azure
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
"""

EXAMPLES = r"""
- name: A storage account for the runs' files
  azure.azcollection.azure_rm_storageaccount:
    resource_group: openadapt-agents
    name: openadaptaciwork
    type: Standard_LRS
    kind: StorageV2

- name: Its file share
  azure.azcollection.azure_rm_storageshare:
    resource_group: openadapt-agents
    account_name: openadaptaciwork
    name: work
    quota: 5

- name: Send the code
  openadapt.azure_eval.file_share_transfer:
    storage_account_name: openadaptaciwork
    resource_group: openadapt-agents
    share: work
    direction: upload
    local_path: "{{ playbook_dir }}/code"
    remote_path: in

- name: Bring it back
  openadapt.azure_eval.file_share_transfer:
    storage_account_name: openadaptaciwork
    resource_group: openadapt-agents
    share: work
    direction: download
    remote_path: in
    local_path: "{{ playbook_dir }}/code-from-share"
"""

RETURN = r"""
files:
  description: Files copied (uploads skip files already there with the same content).
  returned: always
  type: int
bytes:
  description: Bytes copied.
  returned: always
  type: int
paths:
  description: The relative paths copied.
  returned: always
  type: list
  elements: str
"""

import contextlib
import hashlib
from pathlib import Path

try:
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
    from azure.storage.fileshare import ShareServiceClient
except ImportError:
    pass

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)


def _md5(path: Path) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.digest()


class AzureRMFileShareTransfer(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(
            storage_account_name=dict(type="str", required=True),
            resource_group=dict(type="str", required=True),
            share=dict(type="str", required=True),
            direction=dict(type="str", required=True, choices=["upload", "download"]),
            local_path=dict(type="path", required=True),
            remote_path=dict(type="str", default=""),
        )
        self.results = dict(changed=False, files=0, bytes=0, paths=[])
        super().__init__(self.module_arg_spec, supports_check_mode=True, supports_tags=False)

    def exec_module(self, **kwargs):
        params = self.module.params
        share = self._share_client()
        remote = params["remote_path"].strip("/")
        local = Path(params["local_path"])
        if params["direction"] == "upload":
            if not local.is_dir():
                self.fail(f"local_path {local} is not a folder; nothing was uploaded.")
            self._upload(share, local, remote)
        else:
            self._download(share, remote, local)
        self.results["changed"] = self.results["files"] > 0
        return self.results

    def _share_client(self):
        params = self.module.params
        name, group = params["storage_account_name"], params["resource_group"]
        try:
            account = self.storage_client.storage_accounts.get_properties(group, name)
        except ResourceNotFoundError:
            self.fail(f"storage account {name} was not found in resource group {group}.")
        keys = self.storage_client.storage_accounts.list_keys(group, name)
        service = ShareServiceClient(
            account.primary_endpoints.file,
            credential={"account_name": name, "account_key": keys.keys[0].value},
        )
        share = service.get_share_client(params["share"])
        try:
            share.get_share_properties()
        except ResourceNotFoundError:
            self.fail(f"file share {params['share']} does not exist in storage account {name}.")
        return share

    def _ensure_directory(self, share, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            with contextlib.suppress(ResourceExistsError):
                share.create_directory("/".join(parts[:depth]))

    def _upload(self, share, local: Path, remote: str) -> None:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            relative = path.relative_to(local).as_posix()
            target = f"{remote}/{relative}" if remote else relative
            client = share.get_file_client(target)
            try:
                size = client.get_file_properties().size
                if size == path.stat().st_size and self._remote_md5(client) == _md5(path):
                    continue
            except ResourceNotFoundError:
                pass
            self._record(relative, path.stat().st_size)
            if self.check_mode:
                continue
            self._ensure_directory(share, target.rsplit("/", 1)[0] if "/" in target else "")
            with path.open("rb") as f:
                client.upload_file(f, length=path.stat().st_size)

    def _remote_md5(self, client) -> bytes:
        digest = hashlib.md5(usedforsecurity=False)
        for chunk in client.download_file().chunks():
            digest.update(chunk)
        return digest.digest()

    def _download(self, share, remote: str, local: Path) -> None:
        try:
            stack = [remote]
            while stack:
                folder = stack.pop()
                for item in share.list_directories_and_files(folder or None):
                    path = f"{folder}/{item.name}" if folder else item.name
                    if item.is_directory:
                        stack.append(path)
                        continue
                    relative = path[len(remote) :].lstrip("/") if remote else path
                    self._record(relative, item.size or 0)
                    if self.check_mode:
                        continue
                    target = local / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with target.open("wb") as f:
                        share.get_file_client(path).download_file().readinto(f)
        except ResourceNotFoundError:
            return

    def _record(self, relative: str, size: int) -> None:
        self.results["files"] += 1
        self.results["bytes"] += size
        self.results["paths"].append(relative)


def main():
    AzureRMFileShareTransfer()


if __name__ == "__main__":
    main()
