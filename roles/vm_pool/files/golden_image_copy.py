# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copy WAA's golden image (the prepared Windows VM disk: data.img, windows.*) from its blob
container onto this VM's disk, read with the VM's managed identity (``managed_identity``);
stdlib only, run with the VM's own python3 by role vm_pool's bootstrap.

The container's blobs under the prefix are listed (Blob REST ``List Blobs``, paged with
``NextMarker``) and each is streamed to a temporary ``.part`` file next to its target, then
renamed: a 30 GB image is never whole in memory, and a download that broke resumes from its
part (a ranged read, ``If-Match`` the blob's ETag). A manifest next to the files
(``.golden-image-manifest.json``) records each file's size and ETag: a file whose size and ETag
match is skipped, so a second run downloads nothing. Files the manifest knows that are no longer
in the container are removed; other files in the directory are left alone.

Environment: VM_POOL_IMAGE_CONTAINER_URL (https://<account>.blob.core.windows.net/<container>),
VM_POOL_IMAGE_PREFIX (blob-name prefix, e.g. ``storage/``), VM_POOL_IMAGE_DIR (absolute),
VM_POOL_IDENTITY_CLIENT_ID (optional), VM_POOL_IMAGE_REQUIRED (comma-separated files the image
must have; default data.img), VM_POOL_IMAGE_PERMISSION_WAIT_S (how long a 403 is retried: a new
role assignment takes minutes to apply on the data plane).

Prints one JSON line: ``{"changed", "path", "downloaded", "skipped", "removed", "bytes"}``, or
``{"failed": true, "msg"}`` (exit code 1) with the fix.
"""

import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from managed_identity import access_token

STORAGE_RESOURCE = "https://storage.azure.com/"
API_VERSION = "2021-08-06"
MANIFEST = ".golden-image-manifest.json"
CHUNK = 8 << 20
ATTEMPTS = 5
UPLOAD_STEP = (
    "upload WAA's prepared image with playbooks/waa_image.yml "
    "(-e eval_golden_image_source=<the folder WAA's --prepare-image filled>)"
)


class CopyError(Exception):
    """Why the image cannot be copied, with the fix (``status``: the HTTP status, if any)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class Blobs:
    """The container's Blob REST API with the identity's bearer token."""

    def __init__(self, container_url: str, client_id: str, permission_wait_s: float):
        self.url = container_url.rstrip("/")
        self.client_id = client_id
        self.permission_wait_s = permission_wait_s
        self._token = ""
        self._token_at = 0.0

    def _bearer(self) -> str:
        if not self._token or time.time() - self._token_at > 600:
            try:
                self._token = access_token(STORAGE_RESOURCE, self.client_id)
            except (OSError, ValueError, KeyError) as exc:
                raise CopyError(
                    f"the VM got no token of its managed identity for Azure Storage ({exc}): give "
                    "the pool's VMs their user-assigned identity (role vm_pool does) and pass its "
                    "client id (vm_pool_identity_client_id)"
                ) from None
            self._token_at = time.time()
        return self._token

    def open(self, url: str, headers: dict | None = None):
        """The response to a GET; a 403 is retried until the permission wait is over."""
        deadline = time.monotonic() + self.permission_wait_s
        delay = 2.0
        while True:
            request = urllib.request.Request(
                url,
                headers={
                    "Authorization": f"Bearer {self._bearer()}",
                    "x-ms-version": API_VERSION,
                    **(headers or {}),
                },
            )
            try:
                return urllib.request.urlopen(request, timeout=60)
            except urllib.error.HTTPError as err:
                code = err.headers.get("x-ms-error-code") or _error_code(err)
                if err.code == 403 and time.monotonic() < deadline:
                    err.close()
                    time.sleep(min(delay, max(deadline - time.monotonic(), 0.1)))
                    delay = min(delay * 2, 30.0)
                    self._token = ""
                    continue
                raise _http_failure(err, code, self.url, self.client_id) from None

    def list(self, prefix: str) -> list[dict]:
        blobs, marker = [], ""
        while True:
            query = {"restype": "container", "comp": "list", "prefix": prefix}
            if marker:
                query["marker"] = marker
            with self.open(f"{self.url}?{urllib.parse.urlencode(query)}") as answer:
                root = ET.fromstring(answer.read())
            for blob in root.iter("Blob"):
                props = blob.find("Properties")
                blobs.append(
                    {
                        "name": blob.findtext("Name") or "",
                        "size": int(props.findtext("Content-Length") or 0),
                        "etag": props.findtext("Etag") or "",
                    }
                )
            marker = root.findtext("NextMarker") or ""
            if not marker:
                return blobs

    def blob_url(self, name: str) -> str:
        return f"{self.url}/{urllib.parse.quote(name)}"


def _error_code(err: urllib.error.HTTPError) -> str:
    try:
        return ET.fromstring(err.read()).findtext("Code") or ""
    except (ET.ParseError, OSError):
        return ""


def _http_failure(err: urllib.error.HTTPError, code: str, url: str, client_id: str) -> CopyError:
    if err.code == 403:
        who = f"client id {client_id}" if client_id else "the VM's identity"
        return CopyError(
            f"the pool's managed identity ({who}) may not read the golden image at {url} "
            f"(403 {code or 'Forbidden'}): grant it Storage Blob Data Reader on that container "
            "(playbooks/vm.yml does, through role waa_image's readers entry point with "
            "waa_image_reader_principal_ids; a new role assignment can take a few minutes to "
            "apply, vm_pool_golden_image_permission_wait_s)",
            403,
        )
    if err.code == 404 and code in ("ContainerNotFound", ""):
        return CopyError(f"there is no blob container {url} (404 {code}): {UPLOAD_STEP}", 404)
    return CopyError(f"reading {url} failed: {err.code} {code or err.reason}", err.code)


def _bare(etag: str) -> str:
    return etag.strip().strip('"')


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


def _relative(name: str, prefix: str) -> str:
    rest = name[len(prefix) :].lstrip("/")
    parts = rest.split("/")
    if not rest or any(p in ("", ".", "..") for p in parts):
        raise CopyError(f"blob {name!r} has no usable file name under prefix {prefix!r}")
    return rest


def _load_manifest(directory: str) -> dict:
    try:
        with open(os.path.join(directory, MANIFEST), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_manifest(directory: str, manifest: dict) -> None:
    path = os.path.join(directory, MANIFEST)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def _part_path(target: str, etag: str) -> str:
    tag = hashlib.sha256(_bare(etag).encode()).hexdigest()[:12]
    head, tail = os.path.split(target)
    return os.path.join(head, f".{tail}.{tag}.part")


def _download(blobs: Blobs, blob: dict, target: str) -> None:
    """Stream the blob to its part file (resuming it), then rename it over the target."""
    part = _part_path(target, blob["etag"])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    for attempt in range(1, ATTEMPTS + 1):
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        if offset > blob["size"]:
            os.remove(part)
            offset = 0
        try:
            if offset < blob["size"]:
                headers = {"If-Match": _quoted(blob["etag"])}
                if offset:
                    headers["x-ms-range"] = f"bytes={offset}-"
                with (
                    blobs.open(blobs.blob_url(blob["name"]), headers) as answer,
                    open(part, "ab") as out,
                ):
                    while True:
                        chunk = answer.read(CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
            elif not os.path.exists(part):
                open(part, "wb").close()  # an empty blob
        except CopyError as exc:
            if exc.status == 412:
                os.remove(part)
                raise CopyError(
                    f"blob {blob['name']} changed while it was copied: run the bootstrap again"
                ) from None
            raise
        except (OSError, http.client.HTTPException):
            if attempt == ATTEMPTS:
                raise
            time.sleep(min(2**attempt, 30))
            continue
        size = os.path.getsize(part)
        if size == blob["size"]:
            os.replace(part, target)
            return
        if attempt == ATTEMPTS:
            raise CopyError(f"blob {blob['name']}: got {size} of {blob['size']} bytes")
    raise CopyError(f"blob {blob['name']} could not be downloaded")


def copy(blobs: Blobs, prefix: str, directory: str, required: list[str]) -> dict:  # the result line
    listed = [b for b in blobs.list(prefix) if not b["name"].endswith("/")]
    files = {_relative(b["name"], prefix): b for b in listed}
    missing = [name for name in required if name not in files]
    if missing:
        raise CopyError(
            f"the golden image in {blobs.url} under prefix '{prefix}' has no "
            f"{', '.join(missing)}: {UPLOAD_STEP}"
        )
    os.makedirs(directory, exist_ok=True)
    manifest = _load_manifest(directory)
    known = manifest.get("files") or {}
    wanted, skipped = [], []
    for rel, blob in sorted(files.items()):
        target = os.path.join(directory, rel)
        entry = known.get(rel) or {}
        if (
            os.path.isfile(target)
            and os.path.getsize(target) == blob["size"]
            and entry.get("size") == blob["size"]
            and _bare(entry.get("etag", "")) == _bare(blob["etag"])
        ):
            skipped.append(rel)
        else:
            wanted.append(rel)
    need = 0
    for rel in wanted:
        part = _part_path(os.path.join(directory, rel), files[rel]["etag"])
        need += files[rel]["size"] - (os.path.getsize(part) if os.path.exists(part) else 0)
    free = shutil.disk_usage(directory).free
    if need > free:
        raise CopyError(
            f"the golden image needs {need / 2**30:.1f} GiB more on this VM's disk but "
            f"{free / 2**30:.1f} GiB are free at {directory}: give the pool's VMs a larger OS "
            "disk (vm_pool_os_disk_size_gb)"
        )
    manifest = {"source": f"{blobs.url}/{prefix}", "files": {r: known[r] for r in skipped}}
    downloaded = 0
    for rel in wanted:
        blob = files[rel]
        _download(blobs, blob, os.path.join(directory, rel))
        downloaded += blob["size"]
        manifest["files"][rel] = {"size": blob["size"], "etag": _bare(blob["etag"])}
        _save_manifest(directory, manifest)
    removed = []
    for rel in sorted(set(known) - set(files)):
        path = os.path.join(directory, rel)
        if os.path.isfile(path):
            os.remove(path)
        removed.append(rel)
    if manifest != _load_manifest(directory):
        _save_manifest(directory, manifest)
    return {
        "changed": bool(wanted or removed),
        "path": directory,
        "downloaded": wanted,
        "skipped": skipped,
        "removed": removed,
        "bytes": downloaded,
    }


def main() -> int:
    directory = os.environ.get("VM_POOL_IMAGE_DIR", "")
    try:
        if not os.path.isabs(directory):
            raise CopyError(f"VM_POOL_IMAGE_DIR must be an absolute path, not {directory!r}")
        blobs = Blobs(
            os.environ["VM_POOL_IMAGE_CONTAINER_URL"],
            os.environ.get("VM_POOL_IDENTITY_CLIENT_ID", ""),
            float(os.environ.get("VM_POOL_IMAGE_PERMISSION_WAIT_S", "300") or 0),
        )
        required = [
            r.strip() for r in os.environ.get("VM_POOL_IMAGE_REQUIRED", "data.img").split(",")
        ]
        prefix = os.environ.get("VM_POOL_IMAGE_PREFIX", "").strip().lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # a folder: "storage" must not match "storage2/..."
        result = copy(blobs, prefix, directory, [r for r in required if r])
    except (CopyError, OSError) as exc:
        print(json.dumps({"failed": True, "msg": f"golden image copy: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
