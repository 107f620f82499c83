"""What an ACR Tasks build of a Dockerfile context produces in the emulator.

No container runs: the Dockerfile is read (``ARG``, ``FROM``, ``ENV``, ``WORKDIR``, ``COPY``,
``ADD``, ``RUN``, ``CMD``, ``ENTRYPOINT``, ``LABEL``, ``USER``, ``EXPOSE``; the last ``FROM``
is the image's base) and an image is made of the base image's layers plus one generated layer
per ``COPY``, ``ADD`` or ``RUN``. Each generated layer's digest is a hash of the instruction and
of the context's contents, and ``created`` is fixed, so the same context builds the same
manifest digest and any change of a file changes it. ``COPY``/``ADD`` sources must exist in the
context, and the base image must resolve (this registry, a public catalog image, or a registry
that allows anonymous pull), or the build fails as Docker would.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import re
import shlex
import tarfile
from dataclasses import dataclass, field
from typing import Any

from localazure.acr import catalog, images
from localazure.core.context import Context

CREATED = "1970-01-01T00:00:00Z"  # reproducible builds: SOURCE_DATE_EPOCH=0
RUN_LAYER_BYTES = 4096
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


class BuildFailed(Exception):
    """The build stops: ``message`` is the line the log ends with."""


@dataclass
class Context_:
    files: dict[str, bytes]
    digest: str  # sha256 over the sorted (path, content digest) pairs

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.files.values())


@dataclass
class BuiltImage:
    record: dict[str, Any]  # as registries keep a manifest (``acr.images``)
    steps: list[str] = field(default_factory=list)  # the build's log lines
    base: str | None = None
    base_size: int = 0


def read_context(archive: bytes) -> Context_:
    """The regular files of a (gzipped) tar archive."""
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    name = member.name.removeprefix("./") or member.name
                    files[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise BuildFailed(f"failed to read the source archive: {err}") from None
    pairs = sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files.items())
    digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
    return Context_(files, "sha256:" + digest)


def _substitute(text: str, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2)
        found = variables.get(name)
        return found if found else (default or "")

    return _VARIABLE.sub(value, text)


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in dockerfile.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.strip().partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        current = ""
    if current.strip():
        keyword, _, rest = current.strip().partition(" ")
        lines.append((keyword.upper(), rest.strip()))
    return lines


def _json_or_shell(value: str) -> list[str]:
    if value.startswith("["):
        try:
            parsed = json.loads(value)
            return [str(v) for v in parsed]
        except ValueError:
            pass
    return ["/bin/sh", "-c", value]


def _copy_sources(ctx_files: dict[str, bytes], args: str) -> tuple[list[str], int]:
    parts = [p for p in shlex.split(args) if not p.startswith("--")]
    if len(parts) < 2:
        raise BuildFailed(f"COPY requires at least two arguments, but got: {args}")
    matched: set[str] = set()
    for source in parts[:-1]:
        pattern = source.strip("/").removeprefix("./") or "."
        if pattern in (".", "*"):
            found = set(ctx_files)
        else:
            found = {
                name
                for name in ctx_files
                if fnmatch.fnmatch(name, pattern) or name.startswith(pattern.rstrip("/") + "/")
            }
        if not found:
            raise BuildFailed(
                f"COPY failed: file not found in build context or excluded by .dockerignore: "
                f"stat {source}: file does not exist"
            )
        matched |= found
    return sorted(matched), sum(len(ctx_files[n]) for n in matched)


def _base_image(
    ctx: Context, registry: dict[str, Any], reference: str
) -> tuple[dict[str, Any] | None, str]:
    """The base image's manifest record (None for ``scratch``) and its full reference."""
    if reference == "scratch":
        return None, "scratch"
    try:
        ref = images.parse_reference(reference)
    except ValueError as err:
        raise BuildFailed(f"failed to parse the base image: {err}") from None
    own = registry["properties"]["loginServer"].lower()
    if ref.registry == own:
        manifest = images.find_manifest(ctx, registry["id"], ref.repository, ref.reference)
    elif images.registry_name_of(ref.registry):
        other = images.find_registry_by_login_server(ctx, ref.registry)
        if other is None or not other["properties"].get("anonymousPullEnabled"):
            raise BuildFailed(
                f"failed to pull the base image {ref}: unauthorized: authentication required "
                "(ACR Tasks pull from their own registry without credentials; give "
                "credentials for other registries)"
            )
        manifest = images.find_manifest(ctx, other["id"], ref.repository, ref.reference)
    else:
        public = catalog.find(ref.registry, ref.repository, ref.reference)
        manifest = public.record() if public else None
    if manifest is None:
        raise BuildFailed(f"failed to pull the base image {ref}: manifest unknown")
    return manifest, str(ref)


def build_image(
    ctx: Context,
    registry: dict[str, Any],
    context: Context_,
    dockerfile_path: str,
    build_args: dict[str, str],
    target: str | None = None,
) -> BuiltImage:
    """Build the context's Dockerfile; raise ``BuildFailed`` with Docker's words."""
    path = (dockerfile_path or "Dockerfile").removeprefix("./") or "Dockerfile"
    if path not in context.files:
        raise BuildFailed(
            "unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
            f"lstat /workspace/{path}: no such file or directory"
        )
    instructions = _instructions(context.files[path].decode("utf-8", errors="replace"))
    if not any(k == "FROM" for k, _ in instructions):
        raise BuildFailed("failed to solve: the Dockerfile has no FROM instruction")
    variables = dict(build_args)
    stage_start = 0
    for index, (keyword, rest) in enumerate(instructions):
        if keyword == "FROM":
            stage_start = index
            if target and rest.lower().split()[-1] == target.lower() and " as " in rest.lower():
                stop = next(
                    (
                        i
                        for i, (k, _) in enumerate(instructions[index + 1 :], index + 1)
                        if k == "FROM"
                    ),
                    len(instructions),
                )
                instructions = instructions[:stop]
                break
    steps: list[str] = []
    env: list[str] = []
    config: dict[str, Any] = {"Env": env, "Cmd": None, "Entrypoint": None, "WorkingDir": "/"}
    labels: dict[str, str] = {}
    layers: list[dict[str, Any]] = []
    base_record, base_ref = None, "scratch"
    total = len(instructions)
    for number, (keyword, rest) in enumerate(instructions, 1):
        text = _substitute(rest, variables)
        steps.append(f"Step {number}/{total} : {keyword} {text}")
        if keyword == "ARG":
            name, _, default = text.partition("=")
            variables.setdefault(name.strip(), default.strip())
            continue
        if number - 1 < stage_start:
            continue  # an earlier stage: only its ARGs before the first FROM matter here
        if keyword == "FROM":
            reference = text.split()[0]
            base_record, base_ref = _base_image(ctx, registry, reference)
            layers = list(_layers_of(base_record))
            env[:] = list((base_record or {}).get("env") or [catalog.DEFAULT_PATH])
            steps.append(f" ---> {(base_record or {}).get('digest', 'scratch')[7:19]}")
        elif keyword == "ENV":
            if "=" in text.split()[0]:
                pairs = [p.partition("=") for p in shlex.split(text)]
                for name, _, value in pairs:
                    env[:] = [e for e in env if not e.startswith(name + "=")] + [f"{name}={value}"]
                    variables[name] = value
            else:
                name, _, value = text.partition(" ")
                env[:] = [e for e in env if not e.startswith(name + "=")] + [
                    f"{name}={value.strip()}"
                ]
                variables[name] = value.strip()
        elif keyword in ("COPY", "ADD"):
            names, size = _copy_sources(context.files, text)
            layers.append(_layer(context.digest, f"{keyword} {text}", size, names))
        elif keyword == "RUN":
            layers.append(_layer(context.digest, f"RUN {text}", RUN_LAYER_BYTES, []))
            steps.append(f" ---> Running in {hashlib.sha256(text.encode()).hexdigest()[:12]}")
        elif keyword == "WORKDIR":
            config["WorkingDir"] = text
        elif keyword == "CMD":
            config["Cmd"] = _json_or_shell(text)
        elif keyword == "ENTRYPOINT":
            config["Entrypoint"] = _json_or_shell(text)
        elif keyword == "LABEL":
            for name, _, value in (p.partition("=") for p in shlex.split(text)):
                labels[name] = value
        elif keyword in (
            "USER",
            "EXPOSE",
            "VOLUME",
            "SHELL",
            "STOPSIGNAL",
            "HEALTHCHECK",
            "ONBUILD",
        ):
            config[keyword.title()] = text
        else:
            raise BuildFailed(
                f"dockerfile parse error line {number}: unknown instruction: {keyword}"
            )
        steps.append(f" ---> {hashlib.sha256((keyword + text).encode()).hexdigest()[:12]}")
    config["Labels"] = labels or None
    record = _record(layers, config, env)
    steps.append(f"Successfully built {record['configDigest'][7:19]}")
    return BuiltImage(record, steps, base_ref, (base_record or {}).get("imageSize", 0))


def _layers_of(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    if record is None:
        return []
    try:
        return json.loads(record["manifest"]).get("layers") or []
    except (KeyError, ValueError):
        return []


def _layer(context_digest: str, instruction: str, size: int, names: list[str]) -> dict[str, Any]:
    seed = json.dumps([context_digest, instruction, names])
    return {
        "mediaType": catalog.LAYER_MEDIA_TYPE,
        "size": max(size, 32),
        "digest": "sha256:" + hashlib.sha256(seed.encode()).hexdigest(),
    }


def _record(layers: list[dict[str, Any]], config: dict[str, Any], env: list[str]) -> dict[str, Any]:
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    config_bytes = json.dumps(image_config, separators=(",", ":"), sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": catalog.MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": catalog.CONFIG_MEDIA_TYPE,
                "size": len(config_bytes),
                "digest": config_digest,
            },
            "layers": layers,
        },
        indent=3,
    )
    return {
        "digest": "sha256:" + hashlib.sha256(manifest.encode()).hexdigest(),
        "imageSize": len(manifest) + len(config_bytes) + sum(layer["size"] for layer in layers),
        "mediaType": catalog.MANIFEST_MEDIA_TYPE,
        "configMediaType": catalog.CONFIG_MEDIA_TYPE,
        "configDigest": config_digest,
        "os": "linux",
        "architecture": "amd64",
        "manifest": manifest,
        "env": list(env),
    }
