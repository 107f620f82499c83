# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image release pipeline's pure parts: which image folders changed, their build contexts,
names and tags, the tests they declare, ``release.json``, ``import.cfg`` and the monthly rebuild
date. Nothing here talks to Azure.

Layout (the seed's): ``<docker_files_path>/<group>/<image folder>/`` holds ``Dockerfile``,
optionally ``Dockerfile.private`` (appended to it at build), ``tests.json``, ``LICENSE.txt`` and
``ThirdPartyNotices.txt``. An image is staged as ``<group>:<folder>--<build number>`` and
promoted as ``<production prefix>/<folder>:<YYYYMMDD.v#>`` and ``:latest``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

SECRET_URI = re.compile(
    r"^https://[a-z0-9-]{3,24}\.vault\.[a-z0-9.]+/secrets/[A-Za-z0-9-]{1,127}(/[0-9a-f]{32})?$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class ReleaseError(ValueError):
    """Bad input; the message says what to fix. Raised before anything is built."""


@dataclass(frozen=True)
class Image:
    group: str
    folder: str
    path: str  # relative to the repository
    has_private_dockerfile: bool
    tests: list[dict]  # the combinations of tests.json ([] when there is none)
    untested: bool

    def staged_tag(self, build_number: str) -> str:
        return f"{self.folder}--{build_number}"

    def staged_name(self, build_number: str) -> str:
        return f"{self.group}:{self.staged_tag(build_number)}"


def release_tag(today: dt.date, release_num: int | None, tag: str | None) -> str:
    """``YYYYMMDD.v<release_num>`` (default 1) or ``tag``; both given is an error."""
    if release_num is not None and tag:
        raise ReleaseError(
            "release_num and release_tag are mutually exclusive: give release_num (the "
            "YYYYMMDD.v<n> tag of today) or release_tag (the whole tag), not both. Nothing was built."
        )
    if tag:
        if not _TAG.match(tag) or tag == "latest":
            raise ReleaseError(f"release_tag '{tag}' is not a valid image tag (or is 'latest').")
        return tag
    number = 1 if release_num is None else release_num
    if number < 1:
        raise ReleaseError(f"release_num must be 1 or more, not {number}.")
    return f"{today:%Y%m%d}.v{number}"


def second_wednesday(year: int, month: int) -> dt.date:
    weeks = calendar.Calendar().monthdatescalendar(year, month)
    wednesdays = [d for week in weeks for d in week if d.weekday() == 2 and d.month == month]
    return wednesdays[1]


def next_rebuild(today: dt.date) -> dt.date:
    """The next monthly Windows rebuild: the second Wednesday of this month, or of the next
    month when this month's is past (today's counts as next)."""
    this = second_wednesday(today.year, today.month)
    if this >= today:
        return this
    year, month = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
    return second_wednesday(year, month)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return done.stdout


def _image_folders(repo: Path, roots: list[str]) -> list[Path]:
    folders = []
    for root in roots:
        base = repo / root
        if not base.is_dir():
            raise ReleaseError(f"docker_files_path '{root}' is not a folder of {repo}.")
        folders += sorted(p.parent for p in base.glob("*/*/Dockerfile"))
    return folders


def _tests_of(folder: Path) -> tuple[list[dict], bool]:
    path = folder / "tests.json"
    if not path.is_file():
        return [], True
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ReleaseError(f"{path} is not valid JSON: {err}") from None
    combinations = data.get("combinations") if isinstance(data, dict) else data
    if not isinstance(combinations, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("command"), str)
        for c in combinations
    ):
        raise ReleaseError(
            f'{path} must hold {{"combinations": [{{"name": ..., "command": ...}}, ...]}}.'
        )
    return combinations, not combinations


def discover(repo: Path, roots: list[str], base_ref: str | None) -> tuple[list[Image], str]:
    """The images whose folder changed between ``base_ref`` and HEAD (every image under the
    roots when none changed, or without a base); and how they were chosen."""
    folders = _image_folders(repo, roots)
    if not folders:
        raise ReleaseError(
            f"no image folder (<group>/<folder>/Dockerfile) under {', '.join(roots)}."
        )
    chosen, how = folders, "all"
    if base_ref:
        merge_base = _git(repo, "merge-base", base_ref, "HEAD").strip()
        changed = [
            name
            for name in _git(repo, "diff", "--name-only", merge_base, "HEAD").splitlines()
            if name
        ]
        touched = [
            f
            for f in folders
            if any(c.startswith(f"{f.relative_to(repo).as_posix()}/") for c in changed)
        ]
        if touched:
            chosen, how = touched, f"changed since {base_ref}"
    images = []
    for folder in chosen:
        group, name = folder.parent.name, folder.name
        for part, what in ((group, "group"), (name, "image folder")):
            if not _COMPONENT.match(part):
                raise ReleaseError(
                    f"{what} '{part}' ({folder}) is not a valid repository name: lower-case "
                    "letters, digits and . _ - only."
                )
        tests, untested = _tests_of(folder)
        images.append(
            Image(
                group=group,
                folder=name,
                path=folder.relative_to(repo).as_posix(),
                has_private_dockerfile=(folder / "Dockerfile.private").is_file(),
                tests=tests,
                untested=untested,
            )
        )
    return images, how


def build_context(repo: Path, image: Image, into: Path) -> Path:
    """A copy of the image folder whose Dockerfile has Dockerfile.private appended."""
    target = into / image.group / image.folder
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(repo / image.path, target, ignore=shutil.ignore_patterns("Dockerfile.private"))
    if image.has_private_dockerfile:
        public = (repo / image.path / "Dockerfile").read_text()
        private = (repo / image.path / "Dockerfile.private").read_text()
        (target / "Dockerfile").write_text(public.rstrip("\n") + "\n" + private)
    return target


def release_document(
    images: list[Image], *, build_number: str, how: str, head: str, staging: str, tag: str
) -> dict:
    return {
        "build_number": build_number,
        "head": head,
        "discovery": how,
        "staging_registry": staging,
        "release_tag": tag,
        "images": [
            {
                **asdict(image),
                "staged_image": f"{staging}/{image.staged_name(build_number)}",
            }
            for image in images
        ],
    }


def import_config(
    images: list[Image],
    *,
    build_number: str,
    staging: str,
    destination_prefix: str,
    tag: str,
    reader_client_id: str,
    reader_secret_uri: str,
) -> list[dict]:
    """``import.cfg``: one entry per image; the password is where the secret lives, never it."""
    if not SECRET_URI.match(reader_secret_uri or ""):
        raise ReleaseError(
            "release_reader_secret_uri must be a Key Vault secret URI "
            "(https://<vault>.vault.azure.net/secrets/<name>), the place the read-only "
            "principal's secret lives; import.cfg never holds the secret itself."
        )
    prefix = destination_prefix.strip("/")
    return [
        {
            "source": {
                "imageName": f"{staging}/{image.staged_name(build_number)}",
                "registryUsername": reader_client_id,
                "registryPassword": {"keyVaultSecretUri": reader_secret_uri},
            },
            "destination": {
                "imageNames": [
                    f"{prefix}/{image.folder}:{tag}" if prefix else f"{image.folder}:{tag}",
                    f"{prefix}/{image.folder}:latest" if prefix else f"{image.folder}:latest",
                ]
            },
        }
        for image in images
    ]
