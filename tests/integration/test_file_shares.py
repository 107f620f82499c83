"""Azure File shares through the real SDKs: shares with azure-mgmt-storage 21.2.1
(``file_shares``), the File data plane with azure-storage-file-share 12.24 (shares, directories,
upload, ranged download, listing, delete) and Shared Key."""

from __future__ import annotations

import os

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.fileshare import ShareServiceClient

GROUP = "files"
ACCOUNT = "filesacct"


@pytest.fixture
def files(azure):
    azure.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
        GROUP, {"location": "eastus"}
    )
    client = azure.mgmt_client(StorageManagementClient)
    client.storage_accounts.begin_create(
        GROUP,
        ACCOUNT,
        {"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
    ).result()
    key = client.storage_accounts.list_keys(GROUP, ACCOUNT).keys[0].value
    endpoint = client.storage_accounts.get_properties(GROUP, ACCOUNT).primary_endpoints.file
    service = ShareServiceClient(endpoint, credential={"account_name": ACCOUNT, "account_key": key})
    return client, service, endpoint


def test_share_is_one_resource_on_both_planes(files):
    client, service, _ = files
    client.file_shares.create(GROUP, ACCOUNT, "mgmt", {"share_quota": 10})
    service.create_share("data")
    names = {s.name for s in service.list_shares()}
    assert names == {"mgmt", "data"}
    assert service.get_share_client("mgmt").get_share_properties().quota == 10
    assert {s.name for s in client.file_shares.list(GROUP, ACCOUNT)} == {"mgmt", "data"}
    with pytest.raises(ResourceExistsError):
        service.create_share("data")
    service.delete_share("data")
    with pytest.raises(ResourceNotFoundError):
        client.file_shares.get(GROUP, ACCOUNT, "data")


def test_directories_upload_download_and_list(files):
    _, service, _ = files
    share = service.get_share_client("work")
    share.create_share()
    share.create_directory("in")
    share.get_directory_client("in").create_subdirectory("deep")
    payload = os.urandom(5 * 1024 * 1024 + 17)  # more than one 4 MiB range
    share.get_file_client("in/data.bin").upload_file(payload)
    share.get_file_client("in/empty.txt").upload_file(b"")
    assert share.get_file_client("in/data.bin").download_file().readall() == payload
    assert share.get_file_client("in/empty.txt").download_file().readall() == b""
    ranged = share.get_file_client("in/data.bin").download_file(offset=10, length=100).readall()
    assert ranged == payload[10:110]
    listed = {(i.name, i.is_directory) for i in share.list_directories_and_files("in")}
    assert listed == {("deep", True), ("data.bin", False), ("empty.txt", False)}
    sizes = {i.name: i.size for i in share.list_directories_and_files("in") if not i.is_directory}
    assert sizes == {"data.bin": len(payload), "empty.txt": 0}
    assert share.get_file_client("in/data.bin").get_file_properties().size == len(payload)
    with pytest.raises(ResourceNotFoundError):
        share.get_file_client("missing/x.txt").upload_file(b"x")
    share.get_file_client("in/empty.txt").delete_file()
    with pytest.raises(ResourceNotFoundError):
        share.get_file_client("in/empty.txt").get_file_properties()


def test_wrong_key_is_refused(files):
    _, _, endpoint = files
    bad = ShareServiceClient(
        endpoint,
        credential={"account_name": ACCOUNT, "account_key": "QUJD" * 22},
    )
    with pytest.raises(ClientAuthenticationError):
        list(bad.list_shares())
