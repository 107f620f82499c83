"""Images held by emulated registries, and how a workload's image reference resolves.

Registry content lives in the store under kinds of its own, keyed by the registry's lower-cased
resource id followed by ``|``, so that deleting a registry, or a resource group or subscription
holding it, drops its content by prefix:

- ``acr-repository``  ``<rid>|<repo>``            created/updated times
- ``acr-manifest``    ``<rid>|<repo>|<digest>``   the manifest and its attributes
- ``acr-tag``         ``<rid>|<repo>|<tag>``      the digest a tag points to
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from localazure.acr import LOGIN_SUFFIX, REGISTRY_TYPE, catalog, permissions
from localazure.arm.resources import now_iso
from localazure.core.context import Context

REPOSITORY_KIND = "acr-repository"
MANIFEST_KIND = "acr-manifest"
TAG_KIND = "acr-tag"
CONTENT_KINDS = (REPOSITORY_KIND, MANIFEST_KIND, TAG_KIND)

# Docker distribution's grammar: lower-case path components separated by "/".
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
DIGEST = re.compile(r"^sha256:[a-f0-9]+$")
_AUTH_HINT = "visit https://aka.ms/acr/authorization for more information."


class ImagePullError(Exception):
    """Why a workload could not pull an image: ``reason`` is ``not_found``, ``unauthorized`` or
    ``registry_not_found``; ``message`` is what the user sees, as a failed pull reports it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """The tag or digest to look up (a digest wins when both are given)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, default_registry: str = catalog.DOCKER_HUB) -> ImageReference:
    """Parse ``[registry/]repository[:tag][@digest]`` as Docker does; raise ``ValueError``."""
    name, _, digest = text.strip().partition("@")
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first.lower(), rest
    else:
        registry, repository = default_registry.lower(), name
    registry = catalog.normalise_registry(registry)
    repository = repository.lower()
    if registry == catalog.DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not REPOSITORY_NAME.match(repository):
        raise ValueError(f"invalid repository name '{repository}' in image reference '{text}'")
    if tag is not None and not TAG_NAME.match(tag):
        raise ValueError(f"invalid tag '{tag}' in image reference '{text}'")
    if digest and not DIGEST.match(digest):
        raise ValueError(f"invalid digest '{digest}' in image reference '{text}'")
    if not tag and not digest:
        tag = "latest"
    return ImageReference(registry, repository, tag or None, digest or None)


# -- registries ---------------------------------------------------------------------------------


def registry_name_of(login_server: str) -> str | None:
    host = login_server.lower().split(":")[0]
    if not host.endswith(LOGIN_SUFFIX):
        return None
    return host.removesuffix(LOGIN_SUFFIX)


def find_registry(ctx: Context, name: str) -> dict[str, Any] | None:
    """The registry called ``name`` anywhere in the emulator (registry names are global)."""
    for registry in ctx.store.list_resources(type=REGISTRY_TYPE):
        if registry["name"].lower() == name.lower():
            return registry
    return None


def find_registry_by_login_server(ctx: Context, login_server: str) -> dict[str, Any] | None:
    name = registry_name_of(login_server)
    return find_registry(ctx, name) if name else None


# -- content ------------------------------------------------------------------------------------


def _key(registry_id: str, *parts: str) -> str:
    return "|".join((registry_id.lower(), *parts))


def list_repositories(ctx: Context, registry_id: str) -> list[dict[str, Any]]:
    repos = ctx.store.values(REPOSITORY_KIND, _key(registry_id, ""))
    return sorted(repos, key=lambda r: r["name"])


def get_repository(ctx: Context, registry_id: str, repository: str) -> dict[str, Any] | None:
    return ctx.store.get(REPOSITORY_KIND, _key(registry_id, repository))


def list_tags(ctx: Context, registry_id: str, repository: str) -> list[dict[str, Any]]:
    tags = ctx.store.values(TAG_KIND, _key(registry_id, repository, ""))
    return sorted(tags, key=lambda t: t["name"])


def get_tag(ctx: Context, registry_id: str, repository: str, tag: str) -> dict[str, Any] | None:
    return ctx.store.get(TAG_KIND, _key(registry_id, repository, tag))


def list_manifests(ctx: Context, registry_id: str, repository: str) -> list[dict[str, Any]]:
    manifests = ctx.store.values(MANIFEST_KIND, _key(registry_id, repository, "sha256:"))
    return sorted(manifests, key=lambda m: m["digest"])


def get_manifest(
    ctx: Context, registry_id: str, repository: str, digest: str
) -> dict[str, Any] | None:
    return ctx.store.get(MANIFEST_KIND, _key(registry_id, repository, digest))


def tags_of(ctx: Context, registry_id: str, repository: str, digest: str) -> list[str]:
    return [t["name"] for t in list_tags(ctx, registry_id, repository) if t["digest"] == digest]


def find_manifest(
    ctx: Context, registry_id: str, repository: str, reference: str
) -> dict[str, Any] | None:
    """The manifest a tag or a digest names in ``repository``."""
    if DIGEST.match(reference):
        return get_manifest(ctx, registry_id, repository, reference)
    tag = get_tag(ctx, registry_id, repository, reference)
    return get_manifest(ctx, registry_id, repository, tag["digest"]) if tag else None


def put_image(
    ctx: Context, registry_id: str, repository: str, manifest: dict[str, Any], tag: str | None
) -> None:
    """Store ``manifest`` in ``repository`` and point ``tag`` at it (no tag: untagged copy)."""
    stamp = now_iso()
    with ctx.store.transaction():
        repo = get_repository(ctx, registry_id, repository) or {
            "name": repository,
            "createdTime": stamp,
        }
        repo["lastUpdateTime"] = stamp
        ctx.store.put(REPOSITORY_KIND, _key(registry_id, repository), repo)
        existing = get_manifest(ctx, registry_id, repository, manifest["digest"])
        stored = {
            **manifest,
            "createdTime": existing["createdTime"] if existing else stamp,
            "lastUpdateTime": stamp,
        }
        ctx.store.put(MANIFEST_KIND, _key(registry_id, repository, manifest["digest"]), stored)
        if tag:
            previous = get_tag(ctx, registry_id, repository, tag)
            ctx.store.put(
                TAG_KIND,
                _key(registry_id, repository, tag),
                {
                    "name": tag,
                    "digest": manifest["digest"],
                    "createdTime": previous["createdTime"] if previous else stamp,
                    "lastUpdateTime": stamp,
                },
            )


def delete_tag(ctx: Context, registry_id: str, repository: str, tag: str) -> bool:
    return ctx.store.delete(TAG_KIND, _key(registry_id, repository, tag))


def delete_manifest(ctx: Context, registry_id: str, repository: str, digest: str) -> list[str]:
    """Delete a manifest and the tags pointing at it; return those tags."""
    with ctx.store.transaction():
        tags = tags_of(ctx, registry_id, repository, digest)
        for tag in tags:
            delete_tag(ctx, registry_id, repository, tag)
        ctx.store.delete(MANIFEST_KIND, _key(registry_id, repository, digest))
    return tags


def delete_repository(
    ctx: Context, registry_id: str, repository: str
) -> tuple[list[str], list[str]]:
    """Delete a repository with its manifests and tags; return (digests, tags) deleted."""
    with ctx.store.transaction():
        digests = [m["digest"] for m in list_manifests(ctx, registry_id, repository)]
        tags = [t["name"] for t in list_tags(ctx, registry_id, repository)]
        ctx.store.delete_prefix(MANIFEST_KIND, _key(registry_id, repository, ""))
        ctx.store.delete_prefix(TAG_KIND, _key(registry_id, repository, ""))
        ctx.store.delete(REPOSITORY_KIND, _key(registry_id, repository))
    return digests, tags


def drop_content(ctx: Context, registry_id: str) -> None:
    for kind in CONTENT_KINDS:
        ctx.store.delete_prefix(kind, _key(registry_id, ""))


# -- pulls --------------------------------------------------------------------------------------


def _pull_result(ref: ImageReference, manifest: dict[str, Any], source: str) -> dict[str, Any]:
    return {
        "image": str(ref),
        "registry": ref.registry,
        "repository": ref.repository,
        "tag": ref.tag,
        "digest": manifest["digest"],
        "size": manifest["imageSize"],
        "mediaType": manifest["mediaType"],
        "os": manifest["os"],
        "architecture": manifest["architecture"],
        "env": manifest.get("env") or [],
        "source": source,
    }


def resolve_image(ctx: Context, image_ref: str, puller_object_id: str | None) -> dict[str, Any]:
    """Resolve the image a workload pulls, with the pull's authorization rules.

    ``puller_object_id`` is the identity the workload pulls with (None: anonymous). Images in an
    emulated registry need AcrPull (or a role that includes pull) on the registry or a parent
    scope, unless the registry allows anonymous pull; public catalog images need nothing.
    Returns the manifest info (``digest``, ``size``, ...); raises ``ImagePullError``.
    """
    try:
        ref = parse_reference(image_ref)
    except ValueError as err:
        raise ImagePullError(
            "not_found", f'Failed to pull image "{image_ref}": invalid reference format: {err}'
        ) from None
    registry_name = registry_name_of(ref.registry)
    if registry_name is None:
        image = catalog.find(ref.registry, ref.repository, ref.reference)
        if image is None:
            raise ImagePullError(
                "not_found",
                f'Failed to pull image "{image_ref}": manifest for {ref} not found: '
                "manifest unknown: manifest unknown",
            )
        return _pull_result(ref, image.record(), "public")
    registry = find_registry(ctx, registry_name)
    if registry is None:
        raise ImagePullError(
            "registry_not_found",
            f'Failed to pull image "{image_ref}": dial tcp: lookup {ref.registry}: no such host '
            f"(no container registry named '{registry_name}' exists)",
        )
    anonymous_ok = bool(registry["properties"].get("anonymousPullEnabled"))
    if not anonymous_ok and (
        puller_object_id is None
        or not permissions.permits(ctx, puller_object_id, "pull", registry["id"])
    ):
        who = f"identity '{puller_object_id}'" if puller_object_id else "an anonymous client"
        raise ImagePullError(
            "unauthorized",
            f'Failed to pull image "{image_ref}": unauthorized: authentication required, '
            f"{_AUTH_HINT} The pull ran as {who}, which has no AcrPull role (or a role "
            f"including pull) on registry '{registry['name']}' ({registry['id']}) or a parent "
            "scope. Grant it with: az role assignment create --assignee <principal id> "
            f"--role AcrPull --scope {registry['id']}",
        )
    manifest = find_manifest(ctx, registry["id"], ref.repository, ref.reference)
    if manifest is None:
        raise ImagePullError(
            "not_found",
            f'Failed to pull image "{image_ref}": {ref.registry}/{ref.repository}:'
            f"{ref.reference}: not found (registry '{registry['name']}' has no such "
            "repository or tag; import or push it first)",
        )
    return _pull_result(ref, manifest, "registry")
