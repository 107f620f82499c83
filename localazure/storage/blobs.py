"""Blob state: containers and block blobs in the store, their bytes on disk.

Every block (a Put Block, or the whole body of a Put Blob) is one file under
``<state dir>/storage/<account>/blocks/``, written as it streams in; a committed blob is the
ordered list of its blocks, read back file by file, so a blob is never held whole in memory.
Uncommitted blocks are kept per blob until a Put Block List commits or discards them, which is
what lets a client resume an interrupted upload (Get Block List shows what already arrived).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

from localazure.core.context import Context

CONTAINER_KIND = "storage-container"
BLOB_KIND = "storage-blob"
BLOCK_KIND = "storage-uncommitted-block"
# Azure's limits (service version 2019-12-12 and later).
MAX_BLOCK_BYTES = 4000 * 1024 * 1024
MAX_PUT_BLOB_BYTES = 5000 * 1024 * 1024
MAX_BLOCKS = 50_000
MAX_UNCOMMITTED_BLOCKS = 100_000
_READ_CHUNK = 1024 * 1024
CONTAINER_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


class BlobStateError(Exception):
    """A rule of the Blob service was broken; the data plane turns it into Azure's error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class WrittenBlock:
    file: str
    size: int
    md5: str  # base64, as Content-MD5 carries it


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def iso_date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def new_etag() -> str:
    return f'"0x{secrets.token_hex(8).upper()[:15]}"'


def account_dir(ctx: Context, account: str) -> Path:
    return ctx.settings.state_dir / "storage" / account.lower()


def _container_key(account: str, container: str) -> str:
    return f"{account.lower()}/{container}"


def _blob_key(account: str, container: str, blob: str) -> str:
    return f"{account.lower()}/{container}/{blob}"


def _block_key(account: str, container: str, blob: str, block_id: str) -> str:
    return f"{_blob_key(account, container, blob)}\n{block_id}"


# -- block files --------------------------------------------------------------------------------


async def write_block(
    ctx: Context, account: str, chunks: AsyncIterator[bytes], limit: int
) -> WrittenBlock:
    """Stream a request body into a new block file, hashing it on the way."""
    directory = account_dir(ctx, account) / "blocks"
    directory.mkdir(parents=True, exist_ok=True)
    name = uuid.uuid4().hex
    path = directory / name
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with path.open("wb") as out:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > limit:
                    raise BlobStateError(
                        413,
                        "RequestBodyTooLarge",
                        f"The request body is too large and exceeds the maximum permissible limit "
                        f"({limit} bytes).",
                    )
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return WrittenBlock(name, size, base64.b64encode(digest.digest()).decode())


def _block_path(ctx: Context, account: str, file: str) -> Path:
    return account_dir(ctx, account) / "blocks" / file


def discard_block_file(ctx: Context, account: str, file: str) -> None:
    _block_path(ctx, account, file).unlink(missing_ok=True)


def read_range(
    ctx: Context, account: str, blob: dict[str, Any], start: int, end: int
) -> Iterator[bytes]:
    """Yield bytes ``start..end`` (inclusive) of a committed blob, block file by block file."""
    offset = 0
    for block in blob["blocks"]:
        block_start, block_end = offset, offset + block["size"] - 1
        offset += block["size"]
        if block_end < start or block["size"] == 0:
            continue
        if block_start > end:
            break
        with _block_path(ctx, account, block["file"]).open("rb") as source:
            position = max(start - block_start, 0)
            source.seek(position)
            remaining = min(end, block_end) - (block_start + position) + 1
            while remaining > 0:
                data = source.read(min(_READ_CHUNK, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data


# -- containers ---------------------------------------------------------------------------------


def get_container(ctx: Context, account: str, container: str) -> dict[str, Any] | None:
    return ctx.store.get(CONTAINER_KIND, _container_key(account, container))


def create_container(
    ctx: Context, account: str, container: str, metadata: dict[str, str], public_access: str | None
) -> dict[str, Any]:
    if get_container(ctx, account, container):
        raise BlobStateError(
            409, "ContainerAlreadyExists", "The specified container already exists."
        )
    now = time.time()
    record = {
        "name": container,
        "metadata": metadata,
        "etag": new_etag(),
        "last_modified": now,
        "public_access": public_access,
    }
    return ctx.store.put(CONTAINER_KIND, _container_key(account, container), record)


def set_container_metadata(
    ctx: Context, account: str, container: dict[str, Any], metadata: dict[str, str]
) -> dict[str, Any]:
    container.update({"metadata": metadata, "etag": new_etag(), "last_modified": time.time()})
    return ctx.store.put(CONTAINER_KIND, _container_key(account, container["name"]), container)


def list_containers(ctx: Context, account: str) -> list[dict[str, Any]]:
    prefix = f"{account.lower()}/"
    found = [c for k, c in ctx.store.items(CONTAINER_KIND, prefix) if k.startswith(prefix)]
    return sorted(found, key=lambda c: c["name"])


def delete_container(ctx: Context, account: str, container: str) -> None:
    for blob in list_blobs(ctx, account, container):
        delete_blob(ctx, account, container, blob["name"])
    for _, block in _uncommitted_items(ctx, account, container, None):
        discard_block_file(ctx, account, block["file"])
    ctx.store.delete_prefix(BLOCK_KIND, _container_key(account, container) + "/")
    ctx.store.delete(CONTAINER_KIND, _container_key(account, container))


# -- blobs --------------------------------------------------------------------------------------


def get_blob(ctx: Context, account: str, container: str, blob: str) -> dict[str, Any] | None:
    return ctx.store.get(BLOB_KIND, _blob_key(account, container, blob))


def list_blobs(ctx: Context, account: str, container: str) -> list[dict[str, Any]]:
    prefix = _container_key(account, container) + "/"
    found = [b for k, b in ctx.store.items(BLOB_KIND, prefix) if k.startswith(prefix)]
    return sorted(found, key=lambda b: b["name"].encode())


def _save_blob(ctx: Context, account: str, container: str, record: dict[str, Any]) -> None:
    ctx.store.put(BLOB_KIND, _blob_key(account, container, record["name"]), record)


def _new_blob_record(
    name: str, blocks: list[dict[str, Any]], properties: dict[str, Any], existing: dict | None
) -> dict[str, Any]:
    now = time.time()
    return {
        "name": name,
        "blob_type": "BlockBlob",
        "blocks": blocks,
        "size": sum(b["size"] for b in blocks),
        "etag": new_etag(),
        "created": (existing or {}).get("created", now),
        "last_modified": now,
        **properties,
    }


def put_blob(
    ctx: Context,
    account: str,
    container: str,
    name: str,
    written: WrittenBlock,
    properties: dict[str, Any],
) -> dict[str, Any]:
    """Replace the blob with one block (Put Blob); Azure computes its Content-MD5."""
    existing = get_blob(ctx, account, container, name)
    properties = {**properties, "content_md5": properties.get("content_md5") or written.md5}
    block = {"id": None, "file": written.file, "size": written.size}
    record = _new_blob_record(name, [block], properties, existing)
    with ctx.store.transaction():
        _discard_uncommitted(ctx, account, container, name)
        _save_blob(ctx, account, container, record)
    _drop_unused_files(ctx, account, existing, record)
    return record


def stage_block(
    ctx: Context, account: str, container: str, blob: str, block_id: str, written: WrittenBlock
) -> None:
    key = _block_key(account, container, blob, block_id)
    with ctx.store.transaction():
        previous = ctx.store.get(BLOCK_KIND, key)
        if (
            previous is None
            and len(_uncommitted_items(ctx, account, container, blob)) >= MAX_UNCOMMITTED_BLOCKS
        ):
            discard_block_file(ctx, account, written.file)
            raise BlobStateError(
                409,
                "BlockCountExceedsLimit",
                "The uncommitted block count cannot exceed the maximum limit of 100,000 blocks.",
            )
        ctx.store.put(
            BLOCK_KIND,
            key,
            {"id": block_id, "file": written.file, "size": written.size, "staged": time.time()},
        )
    if previous:
        discard_block_file(ctx, account, previous["file"])


def _uncommitted_items(
    ctx: Context, account: str, container: str, blob: str | None
) -> list[tuple[str, dict[str, Any]]]:
    prefix = (
        _blob_key(account, container, blob) + "\n"
        if blob is not None
        else _container_key(account, container) + "/"
    )
    return [(k, v) for k, v in ctx.store.items(BLOCK_KIND, prefix) if k.startswith(prefix)]


def uncommitted_blocks(
    ctx: Context, account: str, container: str, blob: str
) -> list[dict[str, Any]]:
    """Staged blocks in the order they arrived."""
    blocks = [v for _, v in _uncommitted_items(ctx, account, container, blob)]
    return sorted(blocks, key=lambda b: b["staged"])


def _discard_uncommitted(ctx: Context, account: str, container: str, blob: str) -> None:
    for key, block in _uncommitted_items(ctx, account, container, blob):
        discard_block_file(ctx, account, block["file"])
        ctx.store.delete(BLOCK_KIND, key)


def commit_block_list(
    ctx: Context,
    account: str,
    container: str,
    name: str,
    requested: list[tuple[str, str]],
    properties: dict[str, Any],
) -> dict[str, Any]:
    """Put Block List: ``requested`` is [(``Latest``/``Committed``/``Uncommitted``, block id)]."""
    if len(requested) > MAX_BLOCKS:
        raise BlobStateError(
            409,
            "BlockListTooLong",
            f"The block list may not contain more than {MAX_BLOCKS} blocks.",
        )
    existing = get_blob(ctx, account, container, name)
    committed = {b["id"]: b for b in (existing or {}).get("blocks", []) if b["id"] is not None}
    staged = {b["id"]: b for b in uncommitted_blocks(ctx, account, container, name)}
    blocks = []
    for where, block_id in requested:
        source = None
        if where in ("Latest", "Uncommitted"):
            source = staged.get(block_id)
        if source is None and where in ("Latest", "Committed"):
            source = committed.get(block_id)
        if source is None:
            raise BlobStateError(400, "InvalidBlockList", "The specified block list is invalid.")
        blocks.append({"id": block_id, "file": source["file"], "size": source["size"]})
    used = {b["file"] for b in blocks}
    record = _new_blob_record(name, blocks, properties, existing)
    with ctx.store.transaction():
        for key, _block in _uncommitted_items(ctx, account, container, name):
            ctx.store.delete(BLOCK_KIND, key)
        _save_blob(ctx, account, container, record)
    for block in staged.values():
        if block["file"] not in used:
            discard_block_file(ctx, account, block["file"])
    _drop_unused_files(ctx, account, existing, record)
    return record


def _drop_unused_files(
    ctx: Context, account: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    keep = {b["file"] for b in (new or {}).get("blocks", [])}
    for block in (old or {}).get("blocks", []):
        if block["file"] not in keep:
            discard_block_file(ctx, account, block["file"])


def update_blob(
    ctx: Context, account: str, container: str, blob: dict[str, Any], changes: dict[str, Any]
) -> dict[str, Any]:
    blob.update(changes)
    blob.update({"etag": new_etag(), "last_modified": time.time()})
    _save_blob(ctx, account, container, blob)
    return blob


def delete_blob(ctx: Context, account: str, container: str, name: str) -> None:
    existing = get_blob(ctx, account, container, name)
    with ctx.store.transaction():
        ctx.store.delete(BLOB_KIND, _blob_key(account, container, name))
        _discard_uncommitted(ctx, account, container, name)
    _drop_unused_files(ctx, account, existing, None)


def drop_account_content(ctx: Context, account: str) -> None:
    """Everything the account's data plane holds: records and files."""
    prefix = f"{account.lower()}/"
    for kind in (BLOCK_KIND, BLOB_KIND, CONTAINER_KIND):
        ctx.store.delete_prefix(kind, prefix)
    shutil.rmtree(account_dir(ctx, account), ignore_errors=True)


def remove_orphaned_files(ctx: Context) -> None:
    """Start-up/reset: delete block files no record points at (an interrupted upload's, or all of
    them after a reset)."""
    root = ctx.settings.state_dir / "storage"
    if not root.is_dir():
        return
    referenced: set[str] = set()
    for _, blob in ctx.store.items(BLOB_KIND):
        referenced.update(b["file"] for b in blob["blocks"])
    for _, block in ctx.store.items(BLOCK_KIND):
        referenced.add(block["file"])
    for path in root.glob("*/blocks/*"):
        if path.name not in referenced:
            path.unlink(missing_ok=True)
