"""The Blob service at ``<account>.blob.core.windows.net``: the REST operations azure-storage-blob
12.23 sends for containers and block blobs, with Azure's XML bodies, ``x-ms-*`` headers and
error codes (``x-ms-error-code`` and an ``<Error>`` document).

The operation is chosen as the service chooses it: by the path (account root, container, blob),
the method and the ``restype``/``comp`` query parameters, so one route takes every request to
the host.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from localazure.core.context import Context
from localazure.core.router import Router
from localazure.storage import BLOB_SUFFIX, blobs, containers
from localazure.storage.accounts import find_account
from localazure.storage.auth import Principal, StorageAuthError, authenticate, authorize
from localazure.storage.blobs import BlobStateError, http_date

SERVICE_VERSION = "2025-01-05"
CONTAINERS = "Microsoft.Storage/storageAccounts/blobServices/containers"
CONTAINER_READ = f"{CONTAINERS}/read"
CONTAINER_WRITE = f"{CONTAINERS}/write"
CONTAINER_DELETE = f"{CONTAINERS}/delete"
BLOB_READ = f"{CONTAINERS}/blobs/read"
BLOB_WRITE = f"{CONTAINERS}/blobs/write"
BLOB_DELETE = f"{CONTAINERS}/blobs/delete"
SERVICE_READ = "Microsoft.Storage/storageAccounts/blobServices/read"
MAX_LIST_RESULTS = 5000
MAX_RANGE_MD5_BYTES = 4 * 1024 * 1024
MAX_BLOCK_LIST_BYTES = 16 * 1024 * 1024
_META_PREFIX = "x-ms-meta-"
# Blob content properties: (header on writes, header on reads, record field).
_CONTENT_PROPERTIES = (
    ("x-ms-blob-content-type", "content-type", "content_type"),
    ("x-ms-blob-content-encoding", "content-encoding", "content_encoding"),
    ("x-ms-blob-content-language", "content-language", "content_language"),
    ("x-ms-blob-content-disposition", "content-disposition", "content_disposition"),
    ("x-ms-blob-cache-control", "cache-control", "cache_control"),
    ("x-ms-blob-content-md5", "content-md5", "content_md5"),
)


class StorageError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _container_not_found() -> StorageError:
    return StorageError(404, "ContainerNotFound", "The specified container does not exist.")


def _blob_not_found() -> StorageError:
    return StorageError(404, "BlobNotFound", "The specified blob does not exist.")


def _unsupported(request: Request) -> StorageError:
    return StorageError(
        400,
        "UnsupportedOperation",
        f"The operation {request.method} {request.url.path}?{request.url.query} is not "
        "supported by localazure's Blob service.",
    )


def _error_response(
    request: Request, status: int, code: str, message: str, headers: dict, detail: str | None
) -> Response:
    headers = {**headers, "x-ms-error-code": code}
    if request.method == "HEAD" or status == 304:
        return Response(b"", status_code=status, headers=headers)
    root = ET.Element("Error")
    ET.SubElement(root, "Code").text = code
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime())
    ET.SubElement(root, "Message").text = f"{message}\nRequestId:{uuid.uuid4()}\nTime:{stamp}"
    if detail:
        ET.SubElement(root, "AuthenticationErrorDetail").text = detail
    return _xml(root, status, headers)


def _xml(root: ET.Element, status: int = 200, headers: dict | None = None) -> Response:
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, status_code=status, headers=headers, media_type="application/xml")


def _sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def _bool(value: bool) -> str:
    return "true" if value else "false"


# -- request pieces -----------------------------------------------------------------------------


def _metadata(request: Request) -> dict[str, str]:
    return {
        key[len(_META_PREFIX) :]: value
        for key, value in request.headers.items()
        if key.lower().startswith(_META_PREFIX)
    }


def _meta_headers(metadata: dict[str, str]) -> dict[str, str]:
    return {f"{_META_PREFIX}{k}": v for k, v in metadata.items()}


def _content_properties(request: Request, *, fallback_content_type: bool) -> dict[str, Any]:
    properties = {field: request.headers.get(header) for header, _, field in _CONTENT_PROPERTIES}
    if fallback_content_type and not properties["content_type"]:
        properties["content_type"] = request.headers.get("content-type")
    return properties


def _check_transactional_md5(request: Request, written: blobs.WrittenBlock) -> None:
    expected = request.headers.get("content-md5")
    if expected and expected != written.md5:
        raise StorageError(
            400,
            "Md5Mismatch",
            "The MD5 value specified in the request did not match with the MD5 value calculated "
            "by the server.",
        )


def _conditions(request: Request, current: dict[str, Any] | None, *, write: bool) -> None:
    if_match = request.headers.get("if-match")
    if if_match and (current is None or if_match not in ("*", current["etag"])):
        raise StorageError(
            412,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and current is not None and if_none_match in ("*", current["etag"]):
        if write and if_none_match == "*":
            raise StorageError(409, "BlobAlreadyExists", "The specified blob already exists.")
        if not write:
            raise StorageError(304, "ConditionNotMet", "Not modified.")
        raise StorageError(
            412,
            "ConditionNotMet",
            "The condition specified using HTTP conditional header(s) is not met.",
        )


def _range(request: Request, size: int) -> tuple[int, int] | None:
    text = request.headers.get("x-ms-range") or request.headers.get("range")
    if not text:
        return None
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", text.strip())
    if not match:
        return None  # Azure ignores a range it cannot parse and returns the whole blob.
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        raise StorageError(
            416,
            "InvalidRange",
            "The range specified is invalid for the current size of the resource.",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, min(end, size - 1)


# -- response pieces ----------------------------------------------------------------------------


def _container_headers(container: dict[str, Any]) -> dict[str, str]:
    headers = {
        "ETag": container["etag"],
        "Last-Modified": http_date(container["last_modified"]),
        "x-ms-lease-status": "unlocked",
        "x-ms-lease-state": "available",
        "x-ms-has-immutability-policy": "false",
        "x-ms-has-legal-hold": "false",
        "x-ms-default-encryption-scope": "$account-encryption-key",
        "x-ms-deny-encryption-scope-override": "false",
        **_meta_headers(container["metadata"]),
    }
    if container.get("public_access"):
        headers["x-ms-blob-public-access"] = container["public_access"]
    return headers


def _blob_headers(blob: dict[str, Any], *, ranged: bool) -> dict[str, str]:
    headers = {
        "ETag": blob["etag"],
        "Last-Modified": http_date(blob["last_modified"]),
        "x-ms-creation-time": http_date(blob["created"]),
        "x-ms-blob-type": blob["blob_type"],
        "x-ms-lease-status": "unlocked",
        "x-ms-lease-state": "available",
        "x-ms-server-encrypted": "true",
        "x-ms-access-tier": "Hot",
        "x-ms-access-tier-inferred": "true",
        "Accept-Ranges": "bytes",
        "Content-Type": blob.get("content_type") or "application/octet-stream",
        **_meta_headers(blob.get("metadata") or {}),
    }
    for _, header, field in _CONTENT_PROPERTIES:
        if field in ("content_type", "content_md5") or not blob.get(field):
            continue
        headers[header] = blob[field]
    if blob.get("content_md5"):
        headers["x-ms-blob-content-md5" if ranged else "Content-MD5"] = blob["content_md5"]
    return headers


def _written(record: dict[str, Any], status: int = 200, **extra: str) -> Response:
    """The empty answer of a write: the new ETag and Last-Modified, and ``extra`` headers."""
    headers = {"ETag": record["etag"], "Last-Modified": http_date(record["last_modified"])}
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return Response(b"", status_code=status, headers=headers)


def _blob_properties_xml(parent: ET.Element, blob: dict[str, Any]) -> None:
    props = _sub(parent, "Properties")
    _sub(props, "Creation-Time", http_date(blob["created"]))
    _sub(props, "Last-Modified", http_date(blob["last_modified"]))
    _sub(props, "Etag", blob["etag"])
    _sub(props, "Content-Length", blob["size"])
    _sub(props, "Content-Type", blob.get("content_type") or "application/octet-stream")
    _sub(props, "Content-Encoding", blob.get("content_encoding"))
    _sub(props, "Content-Language", blob.get("content_language"))
    _sub(props, "Content-MD5", blob.get("content_md5"))
    _sub(props, "Content-Disposition", blob.get("content_disposition"))
    _sub(props, "Cache-Control", blob.get("cache_control"))
    _sub(props, "BlobType", blob["blob_type"])
    _sub(props, "AccessTier", "Hot")
    _sub(props, "AccessTierInferred", "true")
    _sub(props, "LeaseStatus", "unlocked")
    _sub(props, "LeaseState", "available")
    _sub(props, "ServerEncrypted", "true")


def _metadata_xml(parent: ET.Element, metadata: dict[str, str]) -> None:
    element = _sub(parent, "Metadata")
    for key, value in metadata.items():
        _sub(element, key, value)


def _page(
    items: list[tuple[str, Any]], marker: str | None, max_results: int
) -> tuple[list[tuple[str, Any]], str | None]:
    """One page of name-ordered items from ``marker`` on, and the marker of the next page."""
    if marker:
        items = [item for item in items if item[0].encode() >= marker.encode()]
    page = items[:max_results]
    next_marker = items[max_results][0] if len(items) > max_results else None
    return page, next_marker


def _max_results(request: Request) -> int:
    raw = request.query_params.get("maxresults")
    if raw is None:
        return MAX_LIST_RESULTS
    if not raw.isdigit() or int(raw) < 1:
        raise StorageError(
            400,
            "OutOfRangeQueryParameterValue",
            f"One of the query parameters specified in the request URI is outside the permissible "
            f"range. maxresults={raw}",
        )
    return min(int(raw), MAX_LIST_RESULTS)


def _enumeration(account: dict[str, Any], request: Request, **attributes: str) -> ET.Element:
    root = ET.Element(
        "EnumerationResults",
        ServiceEndpoint=f"https://{account['name']}{BLOB_SUFFIX}/",
        **attributes,
    )
    for param, tag in (("prefix", "Prefix"), ("marker", "Marker"), ("delimiter", "Delimiter")):
        if request.query_params.get(param):
            _sub(root, tag, request.query_params[param])
    if request.query_params.get("maxresults"):
        _sub(root, "MaxResults", request.query_params["maxresults"])
    return root


async def storage_response(request: Request, dispatch: Awaitable[Response]) -> Response:
    """The answer of a storage data plane (Blob, File): what ``dispatch`` returns, or its error
    as Azure's ``<Error>`` document; with ``x-ms-version`` and ``Date``."""
    headers = {"x-ms-version": request.headers.get("x-ms-version") or SERVICE_VERSION}
    try:
        response = await dispatch
    except StorageError as err:
        response = _error_response(request, err.status, err.code, err.message, err.headers, None)
    except StorageAuthError as err:
        response = _error_response(
            request, err.status, err.code, err.message, err.headers, err.detail
        )
    except BlobStateError as err:
        response = _error_response(request, err.status, err.code, err.message, {}, None)
    response.headers.update(headers)
    response.headers["Date"] = http_date(time.time())
    return response


# -- the service --------------------------------------------------------------------------------


class BlobService:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def scope(self, account: dict[str, Any], container: str = "", blob: str = "") -> str:
        scope = f"{account['id']}/blobServices/default"
        if container:
            scope += f"/containers/{container}"
        if blob:
            scope += f"/blobs/{blob}"
        return scope

    async def handle(self, request: Request, login_host: str, path: str = "") -> Response:
        return await storage_response(request, self._dispatch(request, login_host))

    async def _dispatch(self, request: Request, host: str) -> Response:
        account = find_account(self.ctx, host.removesuffix(BLOB_SUFFIX))
        if account is None:
            raise StorageError(
                404,
                "ResourceNotFound",
                f"The storage account of host '{host}' does not exist.",
            )
        principal = authenticate(self.ctx, request, account)
        request.state.caller = principal
        raw = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
        parts = raw.split("?", 1)[0].lstrip("/").split("/", 1)
        container = unquote(parts[0])
        blob = unquote(parts[1]) if len(parts) > 1 else ""
        restype = request.query_params.get("restype", "")
        comp = request.query_params.get("comp", "")
        method = request.method
        call = None
        if not container:
            call = self._account_operation(method, restype, comp)
        elif not blob and restype == "container":
            call = self._container_operation(method, comp)
        elif blob:
            call = self._blob_operation(method, comp)
        if call is None:
            raise _unsupported(request)
        return await call(request, principal, account, container, blob)

    # -- routing tables -----------------------------------------------------------------------

    def _account_operation(self, method: str, restype: str, comp: str) -> Callable | None:
        return {
            ("GET", "", "list"): self.list_containers,
            ("GET", "service", "properties"): self.get_service_properties,
            ("GET", "account", "properties"): self.get_account_information,
            ("HEAD", "account", "properties"): self.get_account_information,
        }.get((method, restype, comp))

    def _container_operation(self, method: str, comp: str) -> Callable | None:
        return {
            ("PUT", ""): self.create_container,
            ("PUT", "metadata"): self.set_container_metadata,
            ("GET", ""): self.get_container_properties,
            ("HEAD", ""): self.get_container_properties,
            ("GET", "metadata"): self.get_container_properties,
            ("HEAD", "metadata"): self.get_container_properties,
            ("GET", "list"): self.list_blobs,
            ("DELETE", ""): self.delete_container,
        }.get((method, comp))

    def _blob_operation(self, method: str, comp: str) -> Callable | None:
        return {
            ("PUT", ""): self.put_blob,
            ("PUT", "block"): self.put_block,
            ("PUT", "blocklist"): self.put_block_list,
            ("PUT", "properties"): self.set_blob_properties,
            ("PUT", "metadata"): self.set_blob_metadata,
            ("GET", ""): self.get_blob,
            ("HEAD", ""): self.get_blob_properties,
            ("GET", "metadata"): self.get_blob_properties,
            ("HEAD", "metadata"): self.get_blob_properties,
            ("GET", "blocklist"): self.get_block_list,
            ("DELETE", ""): self.delete_blob,
        }.get((method, comp))

    # -- helpers ------------------------------------------------------------------------------

    def _container(self, account: dict[str, Any], container: str) -> dict[str, Any]:
        found = blobs.get_container(self.ctx, account["name"], container)
        if found is None:
            raise _container_not_found()
        return found

    def _blob(self, account: dict[str, Any], container: str, blob: str) -> dict[str, Any]:
        self._container(account, container)
        found = blobs.get_blob(self.ctx, account["name"], container, blob)
        if found is None:
            raise _blob_not_found()
        return found

    # -- account ------------------------------------------------------------------------------

    async def list_containers(self, request, principal: Principal, account, *_: str) -> Response:
        authorize(self.ctx, principal, CONTAINER_READ, self.scope(account), data=False)
        prefix = request.query_params.get("prefix", "")
        include_metadata = "metadata" in request.query_params.get("include", "")
        items = [
            (c["name"], c)
            for c in blobs.list_containers(self.ctx, account["name"])
            if c["name"].startswith(prefix)
        ]
        page, next_marker = _page(items, request.query_params.get("marker"), _max_results(request))
        root = _enumeration(account, request)
        listed = _sub(root, "Containers")
        for name, container in page:
            element = _sub(listed, "Container")
            _sub(element, "Name", name)
            props = _sub(element, "Properties")
            _sub(props, "Last-Modified", http_date(container["last_modified"]))
            _sub(props, "Etag", container["etag"])
            _sub(props, "LeaseStatus", "unlocked")
            _sub(props, "LeaseState", "available")
            if container.get("public_access"):
                _sub(props, "PublicAccess", container["public_access"])
            _sub(props, "DefaultEncryptionScope", "$account-encryption-key")
            _sub(props, "DenyEncryptionScopeOverride", "false")
            _sub(props, "HasImmutabilityPolicy", "false")
            _sub(props, "HasLegalHold", "false")
            if include_metadata:
                _metadata_xml(element, container["metadata"])
        _sub(root, "NextMarker", next_marker)
        return _xml(root)

    async def get_service_properties(self, request, principal, account, *_: str) -> Response:
        authorize(self.ctx, principal, SERVICE_READ, account["id"], data=False)
        root = ET.Element("StorageServiceProperties")
        logging = _sub(root, "Logging")
        for tag, value in (("Version", "1.0"), ("Read", "false"), ("Write", "false")):
            _sub(logging, tag, value)
        _sub(logging, "Delete", "false")
        _sub(_sub(logging, "RetentionPolicy"), "Enabled", "false")
        for metrics in ("HourMetrics", "MinuteMetrics"):
            element = _sub(root, metrics)
            _sub(element, "Version", "1.0")
            _sub(element, "Enabled", "false")
            _sub(_sub(element, "RetentionPolicy"), "Enabled", "false")
        _sub(root, "Cors")
        _sub(_sub(root, "DeleteRetentionPolicy"), "Enabled", "false")
        _sub(_sub(root, "StaticWebsite"), "Enabled", "false")
        return _xml(root)

    async def get_account_information(self, request, principal, account, *_: str) -> Response:
        authorize(self.ctx, principal, SERVICE_READ, account["id"], data=False)
        return Response(
            b"",
            headers={
                "x-ms-sku-name": account["sku"]["name"],
                "x-ms-account-kind": account["kind"],
                "x-ms-is-hns-enabled": _bool(bool(account["properties"].get("isHnsEnabled"))),
            },
        )

    # -- containers ---------------------------------------------------------------------------

    async def create_container(self, request, principal, account, container, _blob) -> Response:
        authorize(self.ctx, principal, CONTAINER_WRITE, self.scope(account, container), data=False)
        if not containers.name_is_valid(container):
            raise StorageError(
                400,
                "InvalidResourceName",
                "The specifed resource name contains invalid characters.",
            )
        record = containers.create(
            self.ctx,
            account,
            container,
            _metadata(request),
            request.headers.get("x-ms-blob-public-access"),
        )
        return _written(record, 201)

    async def set_container_metadata(self, request, principal, account, container, _) -> Response:
        authorize(self.ctx, principal, CONTAINER_WRITE, self.scope(account, container), data=False)
        record = blobs.set_container_metadata(
            self.ctx, account["name"], self._container(account, container), _metadata(request)
        )
        return _written(record)

    async def get_container_properties(self, request, principal, account, container, _) -> Response:
        authorize(self.ctx, principal, CONTAINER_READ, self.scope(account, container), data=False)
        return Response(b"", headers=_container_headers(self._container(account, container)))

    async def delete_container(self, request, principal, account, container, _) -> Response:
        authorize(self.ctx, principal, CONTAINER_DELETE, self.scope(account, container), data=False)
        self._container(account, container)
        containers.delete(self.ctx, account, container)
        return Response(b"", status_code=202)

    async def list_blobs(self, request, principal, account, container, _) -> Response:
        authorize(self.ctx, principal, BLOB_READ, self.scope(account, container), data=True)
        self._container(account, container)
        prefix = request.query_params.get("prefix", "")
        delimiter = request.query_params.get("delimiter", "")
        include_metadata = "metadata" in request.query_params.get("include", "")
        items: list[tuple[str, Any]] = []
        seen_prefixes: set[str] = set()
        for blob in blobs.list_blobs(self.ctx, account["name"], container):
            name = blob["name"]
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                virtual = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if virtual not in seen_prefixes:
                    seen_prefixes.add(virtual)
                    items.append((virtual, None))
                continue
            items.append((name, blob))
        page, next_marker = _page(items, request.query_params.get("marker"), _max_results(request))
        root = _enumeration(account, request, ContainerName=container)
        listed = _sub(root, "Blobs")
        for name, blob in page:
            if blob is None:
                _sub(_sub(listed, "BlobPrefix"), "Name", name)
                continue
            element = _sub(listed, "Blob")
            _sub(element, "Name", name)
            _blob_properties_xml(element, blob)
            if include_metadata:
                _metadata_xml(element, blob.get("metadata") or {})
        _sub(root, "NextMarker", next_marker)
        return _xml(root)

    # -- blobs: writes ------------------------------------------------------------------------

    async def put_blob(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_WRITE, self.scope(account, container, blob), data=True)
        self._container(account, container)
        blob_type = request.headers.get("x-ms-blob-type", "")
        if blob_type != "BlockBlob":
            raise StorageError(
                400,
                "InvalidHeaderValue",
                f"The value for one of the HTTP headers is not in the correct format "
                f"(x-ms-blob-type: '{blob_type}'; localazure stores block blobs only).",
            )
        _conditions(request, blobs.get_blob(self.ctx, account["name"], container, blob), write=True)
        written = await blobs.write_block(
            self.ctx, account["name"], request.stream(), blobs.MAX_PUT_BLOB_BYTES
        )
        try:
            _check_transactional_md5(request, written)
            properties = _content_properties(request, fallback_content_type=True)
            properties["metadata"] = _metadata(request)
            record = blobs.put_blob(self.ctx, account["name"], container, blob, written, properties)
        except BaseException:
            blobs.discard_block_file(self.ctx, account["name"], written.file)
            raise
        return _written(record, 201, Content_MD5=written.md5, x_ms_request_server_encrypted="true")

    async def put_block(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_WRITE, self.scope(account, container, blob), data=True)
        self._container(account, container)
        block_id = request.query_params.get("blockid", "")
        try:
            valid = bool(block_id) and len(base64.b64decode(block_id, validate=True)) <= 64
        except ValueError:
            valid = False
        if not valid:
            raise StorageError(
                400,
                "InvalidQueryParameterValue",
                f"Value for one of the query parameters specified in the request URI is invalid "
                f"(blockid={block_id!r}: a Base64 string of at most 64 bytes).",
            )
        written = await blobs.write_block(
            self.ctx, account["name"], request.stream(), blobs.MAX_BLOCK_BYTES
        )
        try:
            _check_transactional_md5(request, written)
            blobs.stage_block(self.ctx, account["name"], container, blob, block_id, written)
        except BaseException:
            blobs.discard_block_file(self.ctx, account["name"], written.file)
            raise
        return Response(
            b"",
            status_code=201,
            headers={"Content-MD5": written.md5, "x-ms-request-server-encrypted": "true"},
        )

    async def put_block_list(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_WRITE, self.scope(account, container, blob), data=True)
        self._container(account, container)
        _conditions(request, blobs.get_blob(self.ctx, account["name"], container, blob), write=True)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BLOCK_LIST_BYTES:
                raise StorageError(
                    413, "RequestBodyTooLarge", "The block list in the request is too large."
                )
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            raise StorageError(
                400, "InvalidXmlDocument", "XML specified is not syntactically valid."
            ) from None
        requested = [
            (element.tag, element.text or "")
            for element in root
            if element.tag in ("Latest", "Committed", "Uncommitted")
        ]
        properties = _content_properties(request, fallback_content_type=False)
        properties["metadata"] = _metadata(request)
        record = blobs.commit_block_list(
            self.ctx, account["name"], container, blob, requested, properties
        )
        return _written(record, 201, x_ms_request_server_encrypted="true")

    async def set_blob_properties(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_WRITE, self.scope(account, container, blob), data=True)
        record = self._blob(account, container, blob)
        _conditions(request, record, write=True)
        # As in Azure, a content property the request leaves out is cleared.
        changes = _content_properties(request, fallback_content_type=False)
        record = blobs.update_blob(self.ctx, account["name"], container, record, changes)
        return _written(record)

    async def set_blob_metadata(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_WRITE, self.scope(account, container, blob), data=True)
        record = self._blob(account, container, blob)
        _conditions(request, record, write=True)
        record = blobs.update_blob(
            self.ctx, account["name"], container, record, {"metadata": _metadata(request)}
        )
        return _written(record, x_ms_request_server_encrypted="true")

    async def delete_blob(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_DELETE, self.scope(account, container, blob), data=True)
        record = self._blob(account, container, blob)
        _conditions(request, record, write=True)
        blobs.delete_blob(self.ctx, account["name"], container, blob)
        return Response(b"", status_code=202, headers={"x-ms-delete-type-permanent": "true"})

    # -- blobs: reads -------------------------------------------------------------------------

    async def get_blob_properties(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_READ, self.scope(account, container, blob), data=True)
        record = self._blob(account, container, blob)
        _conditions(request, record, write=False)
        headers = _blob_headers(record, ranged=False)
        headers["Content-Length"] = str(record["size"])
        return Response(b"", headers=headers)

    async def get_blob(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_READ, self.scope(account, container, blob), data=True)
        record = self._blob(account, container, blob)
        _conditions(request, record, write=False)
        size = record["size"]
        span = _range(request, size)
        headers = _blob_headers(record, ranged=span is not None)
        start, end = span or (0, size - 1)
        length = end - start + 1 if size else 0
        headers["Content-Length"] = str(length)
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            if request.headers.get("x-ms-range-get-content-md5", "").lower() == "true":
                if length > MAX_RANGE_MD5_BYTES:
                    raise StorageError(
                        400,
                        "OutOfRangeInput",
                        "One of the request inputs is out of range (x-ms-range-get-content-md5 "
                        "needs a range of at most 4 MiB).",
                    )
                digest = hashlib.md5(usedforsecurity=False)
                for chunk in blobs.read_range(self.ctx, account["name"], record, start, end):
                    digest.update(chunk)
                headers["Content-MD5"] = base64.b64encode(digest.digest()).decode()
        content = (
            blobs.read_range(self.ctx, account["name"], record, start, end) if length else iter(())
        )
        media_type = headers.pop("Content-Type")
        return StreamingResponse(
            content, status_code=206 if span else 200, headers=headers, media_type=media_type
        )

    async def get_block_list(self, request, principal, account, container, blob) -> Response:
        authorize(self.ctx, principal, BLOB_READ, self.scope(account, container, blob), data=True)
        self._container(account, container)
        which = request.query_params.get("blocklisttype", "committed").lower()
        record = blobs.get_blob(self.ctx, account["name"], container, blob)
        staged = blobs.uncommitted_blocks(self.ctx, account["name"], container, blob)
        if record is None and not staged:
            raise _blob_not_found()
        root = ET.Element("BlockList")
        if which in ("committed", "all"):
            committed = _sub(root, "CommittedBlocks")
            for block in (record or {}).get("blocks", []):
                if block["id"] is None:
                    continue
                element = _sub(committed, "Block")
                _sub(element, "Name", block["id"])
                _sub(element, "Size", block["size"])
        if which in ("uncommitted", "all"):
            uncommitted = _sub(root, "UncommittedBlocks")
            for block in staged:
                element = _sub(uncommitted, "Block")
                _sub(element, "Name", block["id"])
                _sub(element, "Size", block["size"])
        headers = {"x-ms-blob-content-length": str((record or {}).get("size", 0))}
        if record:
            headers.update(
                {"ETag": record["etag"], "Last-Modified": http_date(record["last_modified"])}
            )
        return _xml(root, headers=headers)


def register(router: Router, ctx: Context) -> None:
    service = BlobService(ctx)

    async def blob_service(request: Request, login_host: str, path: str = "") -> Response:
        return await service.handle(request, login_host, path)

    router.add("GET,HEAD,PUT,DELETE,POST,PATCH,OPTIONS", "{path:path}", blob_service, auth="custom")
