"""Azure Storage as an emulated service: the management routes on ARM (accounts, keys, blob
service settings, containers, file shares), the Blob data plane on ``*.blob.core.windows.net``,
the File data plane on ``*.file.core.windows.net``, and the delete hook that drops an account's keys and content with its resource."""

from __future__ import annotations

from localazure.core.context import Context
from localazure.core.router import Routes
from localazure.core.service import BaseService
from localazure.storage import (
    BLOB_SUFFIX,
    FILE_SUFFIX,
    accounts,
    blobs,
    containers,
    dataplane,
    file_dataplane,
    shares,
)


class StorageService(BaseService):
    name = "storage"

    def register(self, routes: Routes, ctx: Context) -> None:
        accounts.register(routes.arm, ctx)
        containers.register(routes.arm, ctx)
        dataplane.register(routes.host(BLOB_SUFFIX), ctx)
        shares.register(routes.arm, ctx)
        file_dataplane.register(routes.host(FILE_SUFFIX), ctx)

    def bootstrap(self, ctx: Context) -> None:
        blobs.remove_orphaned_files(ctx)
        shares.remove_orphaned_dirs(ctx)

    def on_delete(self, ctx: Context, resource_id: str) -> None:
        accounts.forget_accounts(ctx, resource_id, blobs.drop_account_content)
