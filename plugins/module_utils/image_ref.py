# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Container image references, parsed the way Docker and ACR import read them."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class InvalidImageReference(ValueError):
    pass


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """The tag or digest a manifest request names."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def repository_and_reference(self) -> str:
        """``repo:tag`` or ``repo@digest``, as ACR import takes the source image."""
        sep = "@" if self.digest else ":"
        return f"{self.repository}{sep}{self.reference}"

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository_and_reference}"


def parse(text: str) -> ImageRef:
    """Parse ``[registry/]repository[:tag][@digest]``; Docker Hub is the default registry."""
    value = (text or "").strip()
    if not value or " " in value:
        raise InvalidImageReference(f"'{text}' is not an image reference")
    digest = None
    if "@" in value:
        value, digest = value.split("@", 1)
        if not _DIGEST.match(digest):
            raise InvalidImageReference(f"'{text}': digest must look like sha256:<64 hex digits>")
    tag = None
    last = value.rsplit("/", 1)[-1]
    if ":" in last:
        value, tag = value.rsplit(":", 1)
        if not _TAG.match(tag):
            raise InvalidImageReference(f"'{text}': '{tag}' is not a valid tag")
    parts = value.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, path = parts[0].lower(), parts[1:]
    else:
        registry, path = DOCKER_HUB, parts
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and len(path) == 1:
        path = ["library", *path]
    for component in path:
        if not _COMPONENT.match(component):
            raise InvalidImageReference(
                f"'{text}': repository path component '{component}' must be lower-case "
                "letters, digits and separators (. _ -)"
            )
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry=registry, repository="/".join(path), tag=tag, digest=digest)


def default_target(ref: ImageRef) -> str:
    """Where ``az acr import`` puts an image by default: the source repository without a
    registry host and without Docker Hub's ``library/`` prefix, same tag."""
    repository = (
        ref.repository.removeprefix("library/") if ref.registry == DOCKER_HUB else ref.repository
    )
    return f"{repository}:{ref.tag or 'latest'}"
