"""The public images the emulator knows, as Docker Hub and MCR would serve them.

An import or a pull of a public image resolves here; nothing is downloaded. Each image has a real
Docker v2 schema 2 manifest (JSON, so its digest is the SHA-256 of the bytes served), a real
config blob (so the config digest and size are consistent), and layer sizes chosen to match the
published compressed sizes. Layer digests are derived deterministically from the image name,
since the emulator holds no layer content.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)


@dataclass(frozen=True)
class PublicImage:
    registry: str
    repository: str
    tag: str
    manifest: str
    digest: str
    config_digest: str
    size: int
    os: str
    architecture: str
    env: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"

    def record(self) -> dict:
        """The manifest as registries keep it (see ``localazure.acr.images``)."""
        return {
            "digest": self.digest,
            "imageSize": self.size,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "configMediaType": CONFIG_MEDIA_TYPE,
            "configDigest": self.config_digest,
            "os": self.os,
            "architecture": self.architecture,
            "manifest": self.manifest,
            "env": list(self.env),
        }


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def synthetic_image(
    registry: str,
    repository: str,
    tag: str,
    layer_sizes: list[int],
    *,
    env: list[str],
    created: str,
) -> PublicImage:
    """An image with a generated manifest and config (what the emulator stores for an image it
    is said to have built)."""
    return _build(registry, repository, tag, layer_sizes, env=env, created=created)


def _build(
    registry: str,
    repository: str,
    tag: str,
    layer_sizes: list[int],
    *,
    env: list[str],
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    created: str,
) -> PublicImage:
    name = f"{registry}/{repository}:{tag}"
    layers = [
        {
            "mediaType": LAYER_MEDIA_TYPE,
            "size": size,
            "digest": _sha256(f"{name}#layer{index}".encode()),
        }
        for index, size in enumerate(layer_sizes)
    ]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Env": env, "Entrypoint": entrypoint, "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {
            "type": "layers",
            "diff_ids": [_sha256(f"{name}#diff{index}".encode()) for index in range(len(layers))],
        },
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "size": len(config_bytes),
                "digest": _sha256(config_bytes),
            },
            "layers": layers,
        },
        indent=3,
    )
    return PublicImage(
        registry=registry,
        repository=repository,
        tag=tag,
        manifest=manifest,
        digest=_sha256(manifest.encode()),
        config_digest=_sha256(config_bytes),
        size=len(manifest) + len(config_bytes) + sum(layer_sizes),
        os="linux",
        architecture="amd64",
        env=tuple(env),
    )


DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Windows Agent Arena: a Linux image that runs a Windows 11 VM under QEMU. Almost all of its
# ~15 GB is the prepared VM disk layer.
WINARENA = _build(
    DOCKER_HUB,
    "windowsarena/winarena",
    "latest",
    [
        29_126_484,  # debian bookworm-slim
        212_587_340,  # qemu, samba, novnc and tools
        1_873_912,  # dockurr/windows scripts
        641_229_871,  # python 3 and the WAA client requirements
        52_416_090,  # WAA client and evaluators
        14_062_931_968,  # prepared Windows 11 VM storage
        3_310_592,  # OEM setup scripts
        9_214,  # entry point
    ],
    env=[DEFAULT_PATH, "VERSION=win11e", "RAM_SIZE=8G", "CPU_CORES=8", "DISK_SIZE=30G"],
    entrypoint=["/usr/bin/tini", "-s", "/entry.sh"],
    created="2024-09-12T18:03:41.512204Z",
)

HELLO_WORLD = _build(
    DOCKER_HUB,
    "library/hello-world",
    "latest",
    [2_459],
    env=[DEFAULT_PATH],
    cmd=["/hello"],
    created="2023-05-02T16:49:27.203792Z",
)

AZUREML_OPENMPI = _build(
    "mcr.microsoft.com",
    "azureml/openmpi4.1.0-ubuntu22.04",
    "latest",
    [30_432_571, 118_904_612, 96_221_408, 402_113_779, 9_871_204, 1_204],
    env=[
        DEFAULT_PATH,
        "AZUREML_CONDA_ENVIRONMENT_PATH=/opt/miniconda/envs/azureml",
        "LANG=C.UTF-8",
    ],
    cmd=["bash"],
    created="2025-01-14T09:21:07.482915Z",
)

ACI_HELLOWORLD = _build(
    "mcr.microsoft.com",
    "azuredocs/aci-helloworld",
    "latest",
    [2_207_025, 22_482_981, 2_345_012, 1_489],
    env=[DEFAULT_PATH, "NODE_VERSION=8.9.3"],
    cmd=["node", "/usr/src/app/index.js"],
    created="2018-04-12T21:32:09.118217Z",
)

IMAGES: tuple[PublicImage, ...] = (WINARENA, HELLO_WORLD, AZUREML_OPENMPI, ACI_HELLOWORLD)


def normalise_registry(host: str) -> str:
    host = host.lower().rstrip("/")
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def is_public_registry(host: str) -> bool:
    host = normalise_registry(host)
    return any(image.registry == host for image in IMAGES)


def find(registry: str, repository: str, reference: str) -> PublicImage | None:
    """The public image at ``registry/repository`` with tag or digest ``reference``."""
    registry = normalise_registry(registry)
    repository = repository.lower()
    for image in IMAGES:
        if image.registry != registry or image.repository != repository:
            continue
        if reference in (image.tag, image.digest):
            return image
    return None
