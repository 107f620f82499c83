"""The File service at ``<account>.file.core.windows.net``: the REST operations
azure-storage-file-share 12.24 sends for shares, directories and files, with Azure's XML bodies,
``x-ms-*`` headers and error codes.

A share is a directory on disk (``shares.share_dir``); a directory of the share is a directory
there and a file a file, so what a container writes into its Azure File mount is what this
service lists and serves. Properties come from the file system (``ETag`` and ``Last-Modified``
from the modification time, ``x-ms-file-id`` from the inode); SMB attributes, permissions and
file metadata are answered, not kept.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.core.router import Router
from localazure.storage import FILE_SUFFIX, shares
from localazure.storage.accounts import find_account
from localazure.storage.auth import Principal, authenticate, authorize
from localazure.storage.blobs import http_date
from localazure.storage.dataplane import (
    StorageError,
    _max_results,
    _meta_headers,
    _metadata,
    _page,
    _range,
    _sub,
    _xml,
    storage_response,
)

SHARES = "Microsoft.Storage/storageAccounts/fileServices/shares"
SHARE_READ, SHARE_WRITE, SHARE_DELETE = (f"{SHARES}/{a}" for a in ("read", "write", "delete"))
FILES = "Microsoft.Storage/storageAccounts/fileServices/fileshares/files"
FILE_READ, FILE_WRITE, FILE_DELETE = (f"{FILES}/{a}" for a in ("read", "write", "delete"))
MAX_RANGE_BYTES = 4 * 1024 * 1024
MAX_FILE_BYTES = 4 * 1024**4
PERMISSION_KEY = "4066528134148476695*1"
_CHUNK = 1024 * 1024


def _not_found(code: str, what: str) -> StorageError:
    return StorageError(404, code, f"The specified {what} does not exist.")


def _file_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _etag(stat: os.stat_result) -> str:
    return f'"0x{stat.st_mtime_ns:X}"'


def _item_headers(path: Path, parent: Path) -> dict[str, str]:
    stat = path.stat()
    return {
        "ETag": _etag(stat),
        "Last-Modified": http_date(stat.st_mtime),
        "x-ms-file-attributes": "Directory" if path.is_dir() else "Archive",
        "x-ms-file-creation-time": _file_time(stat.st_ctime),
        "x-ms-file-last-write-time": _file_time(stat.st_mtime),
        "x-ms-file-change-time": _file_time(stat.st_ctime),
        "x-ms-file-permission-key": PERMISSION_KEY,
        "x-ms-file-id": str(stat.st_ino),
        "x-ms-file-parent-id": str(parent.stat().st_ino),
        "x-ms-server-encrypted": "true",
    }


def _content_length(request: Request) -> int:
    raw = request.headers.get("x-ms-content-length", "")
    if not raw.isdigit() or int(raw) > MAX_FILE_BYTES:
        raise StorageError(
            400,
            "InvalidHeaderValue",
            f"The value for one of the HTTP headers is not in the correct format "
            f"(x-ms-content-length: '{raw}').",
        )
    return int(raw)


def _write_range(request: Request) -> tuple[int, int]:
    text = request.headers.get("x-ms-range") or request.headers.get("range") or ""
    match = re.fullmatch(r"bytes=(\d+)-(\d+)", text.strip())
    if not match or int(match.group(2)) < int(match.group(1)):
        raise StorageError(
            400, "InvalidHeaderValue", f"The value for header x-ms-range is invalid: '{text}'."
        )
    start, end = int(match.group(1)), int(match.group(2))
    if end - start + 1 > MAX_RANGE_BYTES:
        raise StorageError(413, "RequestBodyTooLarge", "A range may hold at most 4 MiB of data.")
    return start, end


def _read(path: Path, start: int, end: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


class FileService:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def handle(self, request: Request, login_host: str, path: str = "") -> Response:
        return await storage_response(request, self._dispatch(request, login_host))

    async def _dispatch(self, request: Request, host: str) -> Response:
        account = find_account(self.ctx, host.removesuffix(FILE_SUFFIX))
        if account is None:
            raise StorageError(
                404, "ResourceNotFound", f"The storage account of host '{host}' does not exist."
            )
        principal = authenticate(self.ctx, request, account)
        request.state.caller = principal
        raw = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        parts = [unquote(p) for p in raw.split("?", 1)[0].strip("/").split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise StorageError(400, "InvalidResourceName", "The path contains '.' or '..'.")
        share, names = (parts[0], parts[1:]) if parts else ("", [])
        restype = request.query_params.get("restype", "")
        comp = request.query_params.get("comp", "")
        call: Callable | None = None
        if not share:
            call = {("GET", "", "list"): self.list_shares}.get((request.method, restype, comp))
        elif not names and restype == "share":
            call = {
                ("PUT", ""): self.create_share,
                ("GET", ""): self.get_share_properties,
                ("HEAD", ""): self.get_share_properties,
                ("DELETE", ""): self.delete_share,
            }.get((request.method, comp))
        elif restype == "directory":
            call = {
                ("PUT", ""): self.create_directory,
                ("GET", ""): self.get_directory_properties,
                ("HEAD", ""): self.get_directory_properties,
                ("DELETE", ""): self.delete_directory,
                ("GET", "list"): self.list_directory,
            }.get((request.method, comp))
        elif names:
            call = {
                ("PUT", ""): self.create_file,
                ("PUT", "range"): self.put_range,
                ("PUT", "properties"): self.set_file_properties,
                ("PUT", "metadata"): self.set_file_metadata,
                ("GET", ""): self.get_file,
                ("HEAD", ""): self.get_file_properties,
                ("DELETE", ""): self.delete_file,
            }.get((request.method, comp))
        if call is None:
            raise StorageError(
                400,
                "UnsupportedOperation",
                f"The operation {request.method} {request.url.path}?{request.url.query} is not "
                "supported by localazure's File service.",
            )
        return await call(request, principal, account, share, names)

    # -- helpers ------------------------------------------------------------------------------

    def _scope(self, account: dict[str, Any], share: str) -> str:
        return f"{account['id']}/fileServices/default/shares/{share}"

    def _share_root(self, account: dict[str, Any], share: str) -> Path:
        if shares.get(self.ctx, account, share) is None:
            raise _not_found("ShareNotFound", "share")
        return shares.share_dir(self.ctx, account["name"], share)

    def _path(self, account, share: str, names: list[str], *, parent_must_exist=True) -> Path:
        root = self._share_root(account, share)
        path = root.joinpath(*names)
        if parent_must_exist and names and not path.parent.is_dir():
            raise _not_found("ParentNotFound", "parent path")
        return path

    def _existing_file(self, account, share: str, names: list[str]) -> Path:
        path = self._path(account, share, names)
        if not path.is_file():
            raise _not_found("ResourceNotFound", "resource")
        return path

    def _existing_directory(self, account, share: str, names: list[str]) -> Path:
        path = self._path(account, share, names)
        if not path.is_dir():
            raise _not_found("ResourceNotFound", "resource")
        return path

    # -- shares -------------------------------------------------------------------------------

    async def list_shares(self, request, principal: Principal, account, *_: Any) -> Response:
        authorize(self.ctx, principal, SHARE_READ, account["id"], data=False)
        prefix = request.query_params.get("prefix", "")
        include_metadata = "metadata" in request.query_params.get("include", "")
        items = [
            (s["name"], s)
            for s in shares.list_shares(self.ctx, account)
            if s["name"].startswith(prefix)
        ]
        page, next_marker = _page(items, request.query_params.get("marker"), _max_results(request))
        root = ET.Element(
            "EnumerationResults", ServiceEndpoint=f"https://{account['name']}{FILE_SUFFIX}/"
        )
        if prefix:
            _sub(root, "Prefix", prefix)
        listed = _sub(root, "Shares")
        for name, share in page:
            element = _sub(listed, "Share")
            _sub(element, "Name", name)
            props = _sub(element, "Properties")
            _sub(props, "Last-Modified", http_date(self._modified(share)))
            _sub(props, "Etag", share["etag"])
            _sub(props, "Quota", share["properties"]["shareQuota"])
            _sub(props, "AccessTier", share["properties"]["accessTier"])
            if include_metadata:
                meta = _sub(element, "Metadata")
                for key, value in (share["properties"].get("metadata") or {}).items():
                    _sub(meta, key, value)
        _sub(root, "NextMarker", next_marker)
        return _xml(root)

    def _modified(self, share: dict[str, Any]) -> float:
        stamp = share["properties"]["lastModifiedTime"].replace("Z", "+00:00")
        return dt.datetime.fromisoformat(stamp).timestamp()

    def _share_headers(self, share: dict[str, Any]) -> dict[str, str]:
        props = share["properties"]
        return {
            "ETag": share["etag"],
            "Last-Modified": http_date(self._modified(share)),
            "x-ms-share-quota": str(props["shareQuota"]),
            "x-ms-access-tier": props["accessTier"],
            "x-ms-enabled-protocols": props.get("enabledProtocols", "SMB"),
            **_meta_headers(props.get("metadata") or {}),
        }

    async def create_share(self, request, principal, account, share, _names) -> Response:
        authorize(self.ctx, principal, SHARE_WRITE, self._scope(account, share), data=False)
        if not shares.name_is_valid(share):
            raise StorageError(
                400,
                "InvalidResourceName",
                "The specifed resource name contains invalid characters.",
            )
        if shares.get(self.ctx, account, share) is not None:
            raise StorageError(409, "ShareAlreadyExists", "The specified share already exists.")
        properties: dict[str, Any] = {"metadata": _metadata(request)}
        quota = request.headers.get("x-ms-share-quota")
        if quota:
            properties["shareQuota"] = int(quota) if quota.isdigit() else quota
        if request.headers.get("x-ms-access-tier"):
            properties["accessTier"] = request.headers["x-ms-access-tier"]
        try:
            body, _ = shares.create_or_update(self.ctx, account, share, properties)
        except AzureError as err:
            raise StorageError(400, "InvalidHeaderValue", err.message) from None
        headers = self._share_headers(body)
        return Response(
            b"", 201, {"ETag": headers["ETag"], "Last-Modified": headers["Last-Modified"]}
        )

    async def get_share_properties(self, request, principal, account, share, _names) -> Response:
        authorize(self.ctx, principal, SHARE_READ, self._scope(account, share), data=False)
        found = shares.get(self.ctx, account, share)
        if found is None:
            raise _not_found("ShareNotFound", "share")
        return Response(b"", headers=self._share_headers(found))

    async def delete_share(self, request, principal, account, share, _names) -> Response:
        authorize(self.ctx, principal, SHARE_DELETE, self._scope(account, share), data=False)
        if not shares.delete(self.ctx, account, share):
            raise _not_found("ShareNotFound", "share")
        return Response(b"", 202)

    # -- directories --------------------------------------------------------------------------

    async def create_directory(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_WRITE, self._scope(account, share), data=True)
        path = self._path(account, share, names)
        if not names or path.exists():
            raise StorageError(
                409, "ResourceAlreadyExists", "The specified resource already exists."
            )
        path.mkdir()
        return Response(b"", 201, _item_headers(path, path.parent))

    async def get_directory_properties(self, request, principal, account, share, names):
        authorize(self.ctx, principal, FILE_READ, self._scope(account, share), data=True)
        path = self._existing_directory(account, share, names)
        return Response(b"", headers=_item_headers(path, path.parent if names else path))

    async def delete_directory(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_DELETE, self._scope(account, share), data=True)
        path = self._existing_directory(account, share, names)
        if not names:
            raise StorageError(400, "InvalidResourceName", "The share's root cannot be deleted.")
        if any(path.iterdir()):
            raise StorageError(409, "DirectoryNotEmpty", "The specified directory is not empty.")
        path.rmdir()
        return Response(b"", 202)

    async def list_directory(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_READ, self._scope(account, share), data=True)
        path = self._existing_directory(account, share, names)
        prefix = request.query_params.get("prefix", "")
        entries = sorted(
            (entry.name, entry) for entry in path.iterdir() if entry.name.startswith(prefix)
        )
        page, next_marker = _page(
            entries, request.query_params.get("marker"), _max_results(request)
        )
        root = ET.Element(
            "EnumerationResults",
            ServiceEndpoint=f"https://{account['name']}{FILE_SUFFIX}/",
            ShareName=share,
            DirectoryPath="/".join(names),
        )
        _sub(root, "Prefix", prefix)
        _sub(root, "DirectoryId", str(path.stat().st_ino))
        listed = _sub(root, "Entries")
        for name, entry in page:
            stat = entry.stat()
            element = _sub(listed, "Directory" if entry.is_dir() else "File")
            _sub(element, "Name", name)
            _sub(element, "FileId", str(stat.st_ino))
            props = _sub(element, "Properties")
            if not entry.is_dir():
                _sub(props, "Content-Length", stat.st_size)
            _sub(props, "CreationTime", _file_time(stat.st_ctime))
            _sub(props, "LastWriteTime", _file_time(stat.st_mtime))
            _sub(props, "ChangeTime", _file_time(stat.st_ctime))
            _sub(props, "Last-Modified", http_date(stat.st_mtime))
            _sub(props, "Etag", _etag(stat))
            _sub(element, "Attributes", "Directory" if entry.is_dir() else "Archive")
            _sub(element, "PermissionKey", PERMISSION_KEY)
        _sub(root, "NextMarker", next_marker)
        return _xml(root)

    # -- files --------------------------------------------------------------------------------

    async def create_file(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_WRITE, self._scope(account, share), data=True)
        if request.headers.get("x-ms-type", "").lower() != "file":
            raise StorageError(400, "MissingRequiredHeader", "x-ms-type: file is required.")
        path = self._path(account, share, names)
        if path.is_dir():
            raise StorageError(
                409, "ResourceTypeMismatch", "The specified resource type does not match."
            )
        size = _content_length(request)
        with path.open("wb") as f:
            f.truncate(size)
        return Response(b"", 201, _item_headers(path, path.parent))

    async def put_range(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_WRITE, self._scope(account, share), data=True)
        path = self._existing_file(account, share, names)
        start, end = _write_range(request)
        if end >= path.stat().st_size:
            raise StorageError(
                416,
                "InvalidRange",
                "The range specified is invalid for the current size of the resource.",
            )
        digest = hashlib.md5(usedforsecurity=False)
        if request.headers.get("x-ms-write", "update").lower() == "clear":
            data = b"\0" * (end - start + 1)
        else:
            data = b""
            async for chunk in request.stream():
                data += chunk
                if len(data) > end - start + 1:
                    break
            if len(data) != end - start + 1:
                raise StorageError(
                    400,
                    "InvalidHeaderValue",
                    f"The range's length ({end - start + 1}) and the body's ({len(data)}) differ.",
                )
            digest.update(data)
        with path.open("r+b") as f:
            f.seek(start)
            f.write(data)
        headers = _item_headers(path, path.parent)
        headers["Content-MD5"] = base64.b64encode(digest.digest()).decode()
        headers["x-ms-request-server-encrypted"] = "true"
        return Response(b"", 201, headers)

    async def set_file_properties(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_WRITE, self._scope(account, share), data=True)
        path = self._existing_file(account, share, names)
        if request.headers.get("x-ms-content-length"):
            with path.open("r+b") as f:
                f.truncate(_content_length(request))
        return Response(b"", headers=_item_headers(path, path.parent))

    async def set_file_metadata(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_WRITE, self._scope(account, share), data=True)
        path = self._existing_file(account, share, names)
        stat = path.stat()
        return Response(b"", headers={"ETag": _etag(stat), "x-ms-request-server-encrypted": "true"})

    async def get_file_properties(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_READ, self._scope(account, share), data=True)
        path = self._existing_file(account, share, names)
        headers = _item_headers(path, path.parent)
        headers.update(
            {
                "x-ms-type": "File",
                "Content-Length": str(path.stat().st_size),
                "Content-Type": "application/octet-stream",
            }
        )
        return Response(b"", headers=headers)

    async def get_file(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_READ, self._scope(account, share), data=True)
        path = self._existing_file(account, share, names)
        size = path.stat().st_size
        span = _range(request, size)
        start, end = span or (0, size - 1)
        length = end - start + 1 if size else 0
        headers = _item_headers(path, path.parent)
        headers.update(
            {"x-ms-type": "File", "Accept-Ranges": "bytes", "Content-Length": str(length)}
        )
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        content = _read(path, start, end) if length else iter(())
        return StreamingResponse(
            content,
            status_code=206 if span else 200,
            headers=headers,
            media_type="application/octet-stream",
        )

    async def delete_file(self, request, principal, account, share, names) -> Response:
        authorize(self.ctx, principal, FILE_DELETE, self._scope(account, share), data=True)
        path = self._existing_file(account, share, names)
        path.unlink()
        return Response(b"", 202)


def register(router: Router, ctx: Context) -> None:
    service = FileService(ctx)

    async def file_service(request: Request, login_host: str, path: str = "") -> Response:
        return await service.handle(request, login_host, path)

    router.add("GET,HEAD,PUT,DELETE,POST,OPTIONS", "{path:path}", file_service, auth="custom")
