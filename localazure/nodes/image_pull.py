"""How a node gets a workload's image: resolved against the emulated registries with the pull's
authorization rules (AcrPull or a role including pull, enforced by ``acr.images``), pulled in a
time that grows with the image's size, and cached per node so a second workload with the same
image starts without a pull."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localazure.acr.images import ImagePullError, resolve_image
from localazure.core.context import Context
from localazure.nodes import pool


@dataclass(frozen=True)
class ResolvedImage:
    """An image reference as a node sees it: the registry's record, or why it cannot be pulled."""

    ref: str
    record: dict[str, Any] | None
    error: ImagePullError | None

    @property
    def digest(self) -> str | None:
        return self.record["digest"] if self.record else None

    @property
    def size(self) -> int:
        return self.record["size"] if self.record else 0


def resolve(ctx: Context, image_ref: str, puller_object_id: str | None) -> ResolvedImage:
    """Resolve ``image_ref`` as ``puller_object_id`` would pull it (None: anonymously)."""
    try:
        return ResolvedImage(image_ref, resolve_image(ctx, image_ref, puller_object_id), None)
    except ImagePullError as err:
        return ResolvedImage(image_ref, None, err)


def is_cached(node: dict[str, Any], image: ResolvedImage) -> bool:
    return image.digest is not None and image.digest in node["images"]


def pull_seconds(ctx: Context, node: dict[str, Any], image: ResolvedImage) -> float:
    """Seconds the node takes to pull the image: none when it has it already."""
    return 0.0 if is_cached(node, image) else pool.timing(ctx).pull(image.size)


def pulled(ctx: Context, node_id: str, image: ResolvedImage | str | None) -> None:
    """The node has the image now (``image`` may be a digest)."""
    digest = image.digest if isinstance(image, ResolvedImage) else image
    if digest:
        pool.cache_image(ctx, node_id, digest)
