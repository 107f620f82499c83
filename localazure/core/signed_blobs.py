"""Blob-like files the emulator serves itself behind signed URLs (no bearer token: a signature
and an expiry in the query, as a SAS): run-history logs of Azure ML, ACR Tasks' source uploads
and run logs. Reads honour ``Range``/``x-ms-range`` as the Blob service does."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from localazure.core.errors import AzureError

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class LogSigner:
    """Signs log URLs with a key kept in the state directory (mode 0600), so that URLs handed
    out stay valid across restarts."""

    def __init__(self, key_path: Path):
        if not key_path.exists():
            key_path.parent.mkdir(parents=True, exist_ok=True)
            key_path.write_bytes(secrets.token_bytes(32))
            key_path.chmod(0o600)
        self._key = key_path.read_bytes()

    def signature(self, path: str, expiry: int) -> str:
        return hmac.new(self._key, f"{path}\n{expiry}".encode(), hashlib.sha256).hexdigest()

    def valid(self, path: str, expiry: str, signature: str) -> bool:
        if not expiry.isdigit() or int(expiry) < time.time():
            return False
        return hmac.compare_digest(self.signature(path, int(expiry)), signature)


def blob_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return Response(
        body,
        status_code=status,
        media_type="application/xml",
        headers={"x-ms-error-code": code, **(headers or {})},
    )


def ranged_file(request: Request, path: Path) -> Response:
    """The blob, or the part of it a ``Range``/``x-ms-range`` header asks for."""
    total = path.stat().st_size
    headers = {"Accept-Ranges": "bytes", "x-ms-blob-type": "BlockBlob"}
    spec = request.headers.get("x-ms-range") or request.headers.get("range")
    start, end, status = 0, total - 1, 200
    if spec:
        match = _RANGE.match(spec.strip())
        if not match:
            raise AzureError(400, "InvalidHeaderValue", f"Invalid range header '{spec}'.")
        start = int(match.group(1))
        if start >= total:
            return blob_error(
                416,
                "InvalidRange",
                "The range specified is invalid for the current size of the resource.",
                {"Content-Range": f"bytes */{total}"},
            )
        end = min(int(match.group(2)) if match.group(2) else total - 1, total - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        status = 206
    if request.method == "HEAD":
        headers["Content-Length"] = str(end - start + 1)
        return Response(b"", status_code=status, headers=headers, media_type="text/plain")
    with open(path, "rb") as blob:
        blob.seek(start)
        content = blob.read(end - start + 1)
    return Response(content, status_code=status, headers=headers, media_type="text/plain")
