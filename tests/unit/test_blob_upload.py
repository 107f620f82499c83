"""The pure parts of the golden-image upload: which files, their checksums, block ids that make
a resumed upload safe, the progress log, and reading the caller from a token."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from ansible_collections.openadapt.azure_eval.plugins.module_utils import blob_upload
from ansible_collections.openadapt.azure_eval.plugins.modules.azure_caller_info import token_claims


def test_local_files_walks_sorted_with_relative_names(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("z")
    (tmp_path / "a.img").write_bytes(b"a")
    (tmp_path / "link").symlink_to(tmp_path / "a.img")
    names = [name for _, name in blob_upload.local_files(tmp_path)]
    assert names == ["a.img", "b/z.txt"]
    assert [name for _, name in blob_upload.local_files(tmp_path / "a.img")] == ["a.img"]


def test_checksums_match_hashlib(tmp_path):
    data = bytes(range(256)) * 50_000
    (tmp_path / "disk").write_bytes(data)
    sha, md5 = blob_upload.checksums(tmp_path / "disk")
    assert sha == hashlib.sha256(data).hexdigest()
    assert base64.b64decode(md5) == hashlib.md5(data).digest()


def test_block_ids_have_one_length_and_change_with_the_content():
    sha_a, sha_b = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    ids = [blob_upload.block_id(sha_a, i) for i in (0, 1, 49_999)]
    assert len(set(ids)) == 3 and len({len(i) for i in ids}) == 1
    assert len(base64.b64decode(ids[0])) <= 64  # the service's limit
    assert blob_upload.block_id(sha_b, 0) != ids[0]


def test_progress_appends_json_lines(tmp_path):
    logged = []
    progress = blob_upload.Progress(str(tmp_path / "p" / "progress.jsonl"), logged.append)
    progress(event="block", blocks_done=1)
    progress(event="file_committed")
    lines = [
        json.loads(line) for line in (tmp_path / "p" / "progress.jsonl").read_text().splitlines()
    ]
    assert [line["event"] for line in lines] == ["block", "file_committed"]
    assert len(logged) == 2 and all("ts" in line for line in lines)


def test_summary_counts_what_was_sent():
    result = blob_upload.UploadResult(
        [
            blob_upload.FilePlan("a", "s/a", 100, "x", "y", action="unchanged"),
            blob_upload.FilePlan("b", "s/b", 300, "x", "y", action="resumed", bytes_sent=200),
        ],
        seconds=2.0,
    )
    summary = result.summary()
    assert (summary["bytes_total"], summary["bytes_uploaded"], summary["bytes_skipped"]) == (
        400,
        200,
        200,
    )
    assert result.changed


def _jwt(claims: dict) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256'})}.{part(claims)}.signature"


def test_token_claims_reads_the_payload():
    claims = token_claims(_jwt({"oid": "1234", "tid": "t"}))
    assert claims == {"oid": "1234", "tid": "t"}
    with pytest.raises(ValueError):
        token_claims("not-a-token")
