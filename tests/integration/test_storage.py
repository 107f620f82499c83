"""Azure Storage through the real SDKs: accounts and keys with azure-mgmt-storage 21.2.1, the
Blob data plane with azure-storage-blob 12.23 (containers, block upload and its resumption,
ranged downloads, properties and metadata, listing with prefix/delimiter/paging), Shared Key
verification and Entra authorization by the Storage Blob Data roles."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.storage import StorageManagementClient
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings

GROUP = "storage"
ROLE_IDS = {
    "Storage Blob Data Reader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
}


class Storage:
    def __init__(self, emulator):
        self.emulator = emulator
        emulator.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
            GROUP, {"location": "eastus"}
        )
        self.client = emulator.mgmt_client(StorageManagementClient)
        self.accounts = self.client.storage_accounts

    def create(self, name: str, **properties):
        body = {"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"}
        body.update(properties)
        return self.accounts.begin_create(GROUP, name, body).result()

    def key(self, name: str) -> str:
        return self.accounts.list_keys(GROUP, name).keys[0].value

    def blob_service(self, name: str, credential=None) -> BlobServiceClient:
        account = self.accounts.get_properties(GROUP, name)
        return BlobServiceClient(
            account.primary_endpoints.blob,
            credential=credential or {"account_name": name, "account_key": self.key(name)},
        )

    def grant(self, role: str, scope: str, principal_id: str) -> None:
        client = self.emulator.mgmt_client(AuthorizationManagementClient)
        client.role_assignments.create(
            scope,
            str(uuid.uuid4()),
            {
                "role_definition_id": f"/subscriptions/{self.emulator.subscription_id}/providers/"
                f"Microsoft.Authorization/roleDefinitions/{ROLE_IDS[role]}",
                "principal_id": principal_id,
            },
        )


@pytest.fixture
def storage(azure) -> Storage:
    return Storage(azure)


def _development_principal(emulator) -> str:
    import jwt

    token = emulator.credential().get_token("https://storage.azure.com/.default").token
    return jwt.decode(token, options={"verify_signature": False})["oid"]


# -- management ---------------------------------------------------------------------------------


def test_account_lifecycle_and_fields(storage):
    check = storage.accounts.check_name_availability({"name": "waaimages01"})
    assert check.name_available
    account = storage.create("waaimages01", access_tier="Hot", allow_shared_key_access=False)
    assert account.provisioning_state == "Succeeded"
    assert account.kind == "StorageV2" and account.sku.name == "Standard_LRS"
    assert account.access_tier == "Hot"
    assert account.allow_shared_key_access is False
    assert account.primary_endpoints.blob == "https://waaimages01.blob.core.windows.net/"
    assert account.primary_endpoints.file == "https://waaimages01.file.core.windows.net/"
    taken = storage.accounts.check_name_availability({"name": "waaimages01"})
    assert (taken.name_available, taken.reason) == (False, "AlreadyExists")
    invalid = storage.accounts.check_name_availability({"name": "Bad_Name"})
    assert (invalid.name_available, invalid.reason) == (False, "AccountNameInvalid")

    updated = storage.accounts.update(
        GROUP, "waaimages01", {"access_tier": "Cool", "tags": {"purpose": "waa"}}
    )
    assert (updated.access_tier, updated.tags) == ("Cool", {"purpose": "waa"})
    assert [a.name for a in storage.accounts.list_by_resource_group(GROUP)] == ["waaimages01"]
    assert "waaimages01" in [a.name for a in storage.accounts.list()]

    storage.accounts.delete(GROUP, "waaimages01")
    with pytest.raises(ResourceNotFoundError):
        storage.accounts.get_properties(GROUP, "waaimages01")


def test_invalid_account_name_and_taken_name_are_refused(storage):
    with pytest.raises(HttpResponseError) as err:
        storage.create("Not_Valid")
    assert err.value.error.code == "AccountNameInvalid"
    storage.create("takenname01")
    storage.emulator.mgmt_client(ResourceManagementClient).resource_groups.create_or_update(
        "other", {"location": "eastus"}
    )
    with pytest.raises(HttpResponseError) as err:
        storage.accounts.begin_create(
            "other",
            "takenname01",
            {"location": "eastus", "sku": {"name": "Standard_LRS"}, "kind": "StorageV2"},
        ).result()
    assert err.value.error.code == "StorageAccountAlreadyTaken"


def test_keys_regenerate_and_old_key_is_rejected(storage):
    storage.create("keysacct01")
    old = storage.key("keysacct01")
    service = storage.blob_service("keysacct01")
    service.create_container("box1")
    keys = storage.accounts.regenerate_key(GROUP, "keysacct01", {"key_name": "key1"})
    assert keys.keys[0].value != old and keys.keys[0].permissions == "FULL"
    stale = storage.blob_service("keysacct01", {"account_name": "keysacct01", "account_key": old})
    with pytest.raises(ClientAuthenticationError) as err:
        stale.get_container_client("box1").get_container_properties()
    assert err.value.error_code == "AuthenticationFailed"
    fresh = storage.blob_service(
        "keysacct01", {"account_name": "keysacct01", "account_key": keys.keys[0].value}
    )
    assert fresh.get_container_client("box1").get_container_properties().name == "box1"


def test_shared_key_refused_when_the_account_disallows_it(storage):
    storage.create("nokeyacct01", allow_shared_key_access=False)
    service = storage.blob_service("nokeyacct01")
    with pytest.raises(HttpResponseError) as err:
        service.create_container("box1")
    assert err.value.status_code == 403
    assert err.value.error_code == "KeyBasedAuthenticationNotPermitted"


def test_deleting_the_group_drops_the_account_content(storage):
    storage.create("dropacct01")
    container = storage.blob_service("dropacct01").create_container("box1")
    container.upload_blob("a.bin", b"x" * 1000)
    files = storage.emulator.settings.state_dir / "storage" / "dropacct01"
    assert any(files.rglob("*"))
    storage.emulator.mgmt_client(ResourceManagementClient).resource_groups.begin_delete(
        GROUP
    ).result()
    assert not files.exists()


# -- blob data plane ----------------------------------------------------------------------------


def test_containers_create_get_list_delete(storage):
    storage.create("contacct01")
    service = storage.blob_service("contacct01")
    service.create_container("images", metadata={"purpose": "waa"})
    with pytest.raises(ResourceExistsError):
        service.create_container("images")
    service.create_container("other")
    props = service.get_container_client("images").get_container_properties()
    assert props.metadata == {"purpose": "waa"}
    assert [c.name for c in service.list_containers()] == ["images", "other"]
    assert [c.name for c in service.list_containers(name_starts_with="im")] == ["images"]
    paged = service.list_containers(results_per_page=1).by_page()
    assert [[c.name for c in page] for page in paged] == [["images"], ["other"]]
    service.delete_container("other")
    with pytest.raises(ResourceNotFoundError) as err:
        service.get_container_client("other").get_container_properties()
    assert err.value.error_code == "ContainerNotFound"


def test_upload_download_range_and_properties(storage):
    storage.create("blobacct01")
    container = storage.blob_service("blobacct01").create_container("box")
    data = os.urandom(300_000)
    md5 = hashlib.md5(data).digest()
    container.upload_blob(
        "dir/data.img",
        data,
        metadata={"sha256": hashlib.sha256(data).hexdigest()},
        content_settings=ContentSettings(content_type="application/x-raw-disk-image"),
    )
    client = container.get_blob_client("dir/data.img")
    assert client.download_blob().readall() == data
    assert client.download_blob(offset=1000, length=5000).readall() == data[1000:6000]
    assert client.download_blob(offset=299_990).readall() == data[299_990:]
    chunked = client.download_blob(max_concurrency=2)
    assert b"".join(chunked.chunks()) == data
    props = client.get_blob_properties()
    first_etag = props.etag
    assert props.size == len(data)
    assert props.metadata == {"sha256": hashlib.sha256(data).hexdigest()}
    assert props.content_settings.content_md5 == bytearray(md5)
    assert props.content_settings.content_type == "application/x-raw-disk-image"
    assert props.blob_type == "BlockBlob"
    with pytest.raises(ResourceExistsError):
        container.upload_blob("dir/data.img", b"again")
    client.set_blob_metadata({"sha256": "other"})
    assert client.get_blob_properties().metadata == {"sha256": "other"}
    client.set_http_headers(ContentSettings(content_type="text/plain", content_md5=md5))
    props = client.get_blob_properties()
    assert props.content_settings.content_type == "text/plain"
    assert props.etag != first_etag
    client.delete_blob()
    with pytest.raises(ResourceNotFoundError) as err:
        client.get_blob_properties()
    assert err.value.error_code == "BlobNotFound"


def test_empty_blob_and_validated_download(storage):
    storage.create("emptyacct01")
    container = storage.blob_service("emptyacct01").create_container("box")
    container.upload_blob("empty", b"")
    assert container.get_blob_client("empty").download_blob().readall() == b""
    data = os.urandom(70_000)
    container.upload_blob("checked", data, validate_content=True)
    downloaded = container.get_blob_client("checked").download_blob(validate_content=True)
    assert downloaded.readall() == data


def test_large_upload_goes_in_blocks(storage):
    storage.create("bigacct01")
    service = BlobServiceClient(
        "https://bigacct01.blob.core.windows.net/",
        credential={"account_name": "bigacct01", "account_key": storage.key("bigacct01")},
        max_single_put_size=64 * 1024,
        max_block_size=32 * 1024,
    )
    container = service.create_container("box")
    data = os.urandom(200_000)
    container.upload_blob("big", data, max_concurrency=3)
    client = container.get_blob_client("big")
    committed, uncommitted = client.get_block_list("all")
    assert len(committed) == 7 and not uncommitted
    assert sum(b.size for b in committed) == len(data)
    assert client.download_blob().readall() == data


def test_uncommitted_blocks_resume_an_interrupted_upload(storage):
    storage.create("resumeacct1")
    container = storage.blob_service("resumeacct1").create_container("box")
    client = container.get_blob_client("image/data.img")
    parts = [os.urandom(10_000) for _ in range(4)]
    ids = [base64.b64encode(f"{i:08d}".encode()).decode() for i in range(4)]
    for block_id, part in list(zip(ids, parts, strict=True))[:2]:
        client.stage_block(block_id, part)
    committed, uncommitted = client.get_block_list("all")
    assert committed == [] and [(b.id, b.size) for b in uncommitted] == [
        (ids[0], 10_000),
        (ids[1], 10_000),
    ]
    with pytest.raises(ResourceNotFoundError):
        client.get_blob_properties()
    # The "second run" stages only what is missing, then commits everything.
    for block_id, part in list(zip(ids, parts, strict=True))[2:]:
        client.stage_block(block_id, part)
    client.commit_block_list([BlobBlock(block_id=i) for i in ids], metadata={"done": "yes"})
    assert client.download_blob().readall() == b"".join(parts)
    committed, uncommitted = client.get_block_list("all")
    assert [b.id for b in committed] == ids and uncommitted == []
    with pytest.raises(HttpResponseError) as err:
        client.commit_block_list([BlobBlock(block_id=base64.b64encode(b"missing!").decode())])
    assert err.value.error_code == "InvalidBlockList"
    # A new commit may reuse committed blocks and drop others.
    client.commit_block_list([BlobBlock(block_id=ids[3]), BlobBlock(block_id=ids[0])])
    assert client.download_blob().readall() == parts[3] + parts[0]


def test_transactional_md5_mismatch_is_refused(storage):
    storage.create("md5acct01")
    container = storage.blob_service("md5acct01").create_container("box")
    client = container.get_blob_client("b")
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(HttpResponseError) as err:
        client.stage_block(
            base64.b64encode(b"0001").decode(), b"data", headers={"Content-MD5": wrong}
        )
    assert err.value.error_code == "Md5Mismatch"
    with pytest.raises(ResourceNotFoundError):  # nothing was staged
        client.get_block_list("all")


def test_list_blobs_prefix_delimiter_and_paging(storage):
    storage.create("listacct01")
    container = storage.blob_service("listacct01").create_container("box")
    names = ["storage/data.img", "storage/windows.vars", "storage/windows.boot", "top.txt", "x/y/z"]
    for name in names:
        container.upload_blob(name, name.encode(), metadata={"n": "1"})
    assert [b.name for b in container.list_blobs()] == sorted(names)
    assert [b.name for b in container.list_blobs(name_starts_with="storage/")] == sorted(names[:3])
    assert [b.name for b in container.walk_blobs(delimiter="/")] == [
        "storage/",
        "x/",
        "top.txt",
    ]  # the SDK yields prefixes first
    listed = list(container.list_blobs(include=["metadata"]))
    assert all(b.metadata == {"n": "1"} for b in listed)
    assert listed[0].size == len(listed[0].name)
    pages = container.list_blobs(results_per_page=2).by_page()
    assert [[b.name for b in page] for page in pages] == [
        sorted(names)[0:2],
        sorted(names)[2:4],
        sorted(names)[4:],
    ]


def test_wrong_key_is_authentication_failed(storage):
    storage.create("wrongkey01")
    bad_key = base64.b64encode(os.urandom(64)).decode()
    service = storage.blob_service(
        "wrongkey01", {"account_name": "wrongkey01", "account_key": bad_key}
    )
    with pytest.raises(ClientAuthenticationError) as err:
        list(service.list_containers())
    assert err.value.status_code == 403
    assert err.value.error_code == "AuthenticationFailed"


def test_entra_token_needs_a_blob_data_role(storage):
    storage.create("entraacct01", allow_shared_key_access=False)
    account = storage.accounts.get_properties(GROUP, "entraacct01")
    service = storage.blob_service("entraacct01", storage.emulator.credential())
    # Owner of the subscription: may manage containers (actions) ...
    container = service.create_container("images")
    # ... but holds no data action: no blob read or write.
    with pytest.raises(HttpResponseError) as err:
        container.upload_blob("a", b"data")
    assert err.value.status_code == 403
    assert err.value.error_code == "AuthorizationPermissionMismatch"
    principal = _development_principal(storage.emulator)
    container_scope = f"{account.id}/blobServices/default/containers/images"
    storage.grant("Storage Blob Data Reader", container_scope, principal)
    with pytest.raises(HttpResponseError) as err:
        container.upload_blob("a", b"data")
    assert err.value.error_code == "AuthorizationPermissionMismatch"
    storage.grant("Storage Blob Data Contributor", container_scope, principal)
    container.upload_blob("a", b"data")
    assert container.get_blob_client("a").download_blob().readall() == b"data"
    # The grant is at the container: another container's blobs stay out of reach.
    other = service.create_container("other")
    with pytest.raises(HttpResponseError):
        other.upload_blob("a", b"data")


def test_token_for_another_audience_is_refused(storage):
    from azure.core.credentials import AccessToken

    storage.create("audacct01")
    arm = storage.emulator.credential().get_token("https://management.azure.com/.default")

    class WrongAudience:
        def get_token(self, *scopes, **kwargs):
            return AccessToken(arm.token, arm.expires_on)

    service = storage.blob_service("audacct01", WrongAudience())
    with pytest.raises(ClientAuthenticationError) as err:
        list(service.list_containers())
    assert err.value.error_code == "InvalidAuthenticationInfo"


def test_blob_data_role_definitions_exist(storage):
    client = storage.emulator.mgmt_client(AuthorizationManagementClient)
    scope = f"/subscriptions/{storage.emulator.subscription_id}"
    for name, guid in ROLE_IDS.items():
        found = list(client.role_definitions.list(scope, filter=f"roleName eq '{name}'"))
        assert [d.name for d in found] == [guid]
        assert found[0].permissions[0].data_actions


def test_containers_through_the_management_api_are_the_data_planes(storage):
    storage.create("mgmtcont01")
    created = storage.client.blob_containers.create(
        GROUP, "mgmtcont01", "golden", {"metadata": {"image": "waa"}}
    )
    assert created.name == "golden" and created.public_access in ("None", None)
    service = storage.blob_service("mgmtcont01")
    assert service.get_container_client("golden").get_container_properties().metadata == {
        "image": "waa"
    }
    service.create_container("second")
    listed = [c.name for c in storage.client.blob_containers.list(GROUP, "mgmtcont01")]
    assert listed == ["golden", "second"]
    storage.client.blob_containers.delete(GROUP, "mgmtcont01", "golden")
    with pytest.raises(ResourceNotFoundError):
        service.get_container_client("golden").get_container_properties()
    with pytest.raises(HttpResponseError) as err:
        storage.client.blob_containers.create(
            GROUP, "mgmtcont01", "public", {"public_access": "Container"}
        )
    assert err.value.error.code == "PublicAccessNotPermitted"
