"""Registers Azure Storage with the emulator: the management routes on ARM, the Blob data plane
on ``*.blob.core.windows.net``, and the delete hook that drops an account's keys and content with
its resource."""

from __future__ import annotations

from typing import Any

from localazure.core.context import Context
from localazure.storage import BLOB_SUFFIX, accounts, blobs, containers, dataplane


def register(app: Any, ctx: Context) -> None:
    accounts.register(app.router, ctx)
    containers.register(app.router, ctx)
    dataplane.register(app.host_router(BLOB_SUFFIX), ctx)
    ctx.delete_hooks.append(
        lambda ctx, resource_id: accounts.forget_accounts(
            ctx, resource_id, blobs.drop_account_content
        )
    )


def bootstrap(ctx: Context) -> None:
    blobs.remove_orphaned_files(ctx)
