# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Upload a folder to a blob container once, resumably, with azure-storage-blob.

Each file becomes a block blob. Its SHA-256 is stored in the blob's metadata (``sha256``): a
blob whose size and checksum already match is left alone, so a second run uploads nothing.
Block ids are derived from the file's checksum and the block's index, so an interrupted upload
resumes: the blocks the service already holds uncommitted (Get Block List) are kept and only
the missing ones are sent, then the block list is committed with the checksum and the file's
Content-MD5. A changed file gets new block ids, so stale blocks are never reused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

CHECKSUM_KEY = "sha256"
_HASH_CHUNK = 8 * 1024 * 1024


@dataclass
class FilePlan:
    path: str
    blob: str
    size: int
    sha256: str
    md5: str  # base64
    action: str = ""  # unchanged | uploaded | resumed (| upload/resume in check mode)
    blocks_total: int = 0
    blocks_reused: int = 0
    bytes_sent: int = 0


@dataclass
class UploadResult:
    files: list[FilePlan] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return any(f.action != "unchanged" for f in self.files)

    def summary(self) -> dict:
        sent = sum(f.bytes_sent for f in self.files)
        return {
            "files": [asdict(f) for f in self.files],
            "bytes_total": sum(f.size for f in self.files),
            "bytes_uploaded": sent,
            "bytes_skipped": sum(f.size for f in self.files) - sent,
            "seconds": round(self.seconds, 3),
            "mib_per_s": round(sent / 1048576 / self.seconds, 2) if self.seconds and sent else 0.0,
        }


def local_files(src: Path) -> Iterator[tuple[Path, str]]:
    """(path, relative name with '/') of every regular file under ``src`` (or ``src`` itself)."""
    if src.is_file():
        yield src, src.name
        return
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = Path(root, name)
            if path.is_file() and not path.is_symlink():
                yield path, path.relative_to(src).as_posix()


def checksums(path: Path) -> tuple[str, str]:
    """(SHA-256 hex, MD5 base64) of a file, read in chunks."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as source:
        while chunk := source.read(_HASH_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), base64.b64encode(md5.digest()).decode()


def block_id(sha256: str, index: int) -> str:
    """Same length for every block of a blob (the service requires it), unique per content."""
    return base64.b64encode(f"{sha256[:32]}-{index:08d}".encode()).decode()


class Progress:
    """Appends one JSON line per step to ``path`` (``tail -f`` it during a long upload)."""

    def __init__(self, path: str | None, log: Callable[[str], None]):
        self.path, self.log = path, log
        self.lock = threading.Lock()
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, **event) -> None:
        event["ts"] = round(time.time(), 3)
        line = json.dumps(event, sort_keys=True)
        with self.lock:
            self.log(line)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as out:
                    out.write(line + "\n")


def plan(container_client, src: Path, prefix: str) -> list[FilePlan]:
    """What each file needs, by comparing sizes and checksums with the blobs already there."""
    from azure.core.exceptions import ResourceNotFoundError

    plans = []
    for path, name in local_files(src):
        sha, md5 = checksums(path)
        entry = FilePlan(str(path), prefix + name, path.stat().st_size, sha, md5)
        try:
            props = container_client.get_blob_client(entry.blob).get_blob_properties()
        except ResourceNotFoundError:
            props = None
        if (
            props is not None
            and props.size == entry.size
            and ((props.metadata or {}).get(CHECKSUM_KEY) == sha)
        ):
            entry.action = "unchanged"
        plans.append(entry)
    return plans


def _staged_blocks(blob_client) -> dict[str, int]:
    from azure.core.exceptions import ResourceNotFoundError

    try:
        _committed, uncommitted = blob_client.get_block_list("uncommitted")
    except ResourceNotFoundError:
        return {}
    return {b.id: b.size for b in uncommitted}


def upload_file(
    container_client,
    entry: FilePlan,
    *,
    block_size: int,
    concurrency: int,
    metadata: dict[str, str],
    progress: Progress,
    check_mode: bool,
) -> None:
    from azure.storage.blob import BlobBlock, ContentSettings

    blob_client = container_client.get_blob_client(entry.blob)
    blocks = -(-entry.size // block_size)  # an empty file commits an empty block list
    ids = [block_id(entry.sha256, i) for i in range(blocks)]
    staged = _staged_blocks(blob_client)
    sizes = [min(block_size, entry.size - i * block_size) for i in range(blocks)]
    missing = [i for i in range(blocks) if staged.get(ids[i]) != sizes[i]]
    entry.blocks_total, entry.blocks_reused = blocks, blocks - len(missing)
    entry.action = "resumed" if entry.blocks_reused else "uploaded"
    entry.bytes_sent = sum(sizes[i] for i in missing)
    if check_mode:
        return
    done = {"blocks": entry.blocks_reused, "bytes": entry.size - entry.bytes_sent}
    lock = threading.Lock()
    progress(
        event="file_started",
        blob=entry.blob,
        size=entry.size,
        blocks=blocks,
        blocks_reused=entry.blocks_reused,
    )

    def send(index: int) -> None:
        with open(entry.path, "rb") as source:
            source.seek(index * block_size)
            data = source.read(sizes[index])
        blob_client.stage_block(ids[index], data, length=len(data))
        with lock:
            done["blocks"] += 1
            done["bytes"] += len(data)
            snapshot = dict(done)
        progress(
            event="block",
            blob=entry.blob,
            blocks_done=snapshot["blocks"],
            blocks=blocks,
            bytes_done=snapshot["bytes"],
            size=entry.size,
        )

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for future in [pool.submit(send, i) for i in missing]:
            future.result()
    blob_client.commit_block_list(
        [BlobBlock(block_id=i) for i in ids],
        metadata={**metadata, CHECKSUM_KEY: entry.sha256},
        content_settings=ContentSettings(
            content_type="application/octet-stream", content_md5=base64.b64decode(entry.md5)
        ),
    )
    progress(event="file_committed", blob=entry.blob, size=entry.size)


def upload_folder(
    container_client,
    src: Path,
    *,
    prefix: str = "",
    block_size: int,
    concurrency: int,
    metadata: dict[str, str] | None = None,
    progress: Progress,
    check_mode: bool = False,
) -> UploadResult:
    started = time.monotonic()
    result = UploadResult(plan(container_client, src, prefix))
    for entry in result.files:
        if entry.action == "unchanged":
            continue
        upload_file(
            container_client,
            entry,
            block_size=block_size,
            concurrency=concurrency,
            metadata=metadata or {},
            progress=progress,
            check_mode=check_mode,
        )
    result.seconds = time.monotonic() - started
    return result
