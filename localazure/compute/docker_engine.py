"""The Docker engine of an emulated VM, behind the ``docker`` command on the VM's PATH
(``docker_cli``), which calls these routes with the VM's agent secret:

POST /_localazure/compute/agent/docker/{login,pull,images,run,ps,logs,kill,rm,inspect}

- ``login``: a registry's admin credentials, or the ACR refresh token of an identity (user
  ``00000000-0000-0000-0000-000000000000``, as ``az acr login --expose-token`` gives and the
  ``/oauth2/exchange`` endpoint issues for the VM's managed identity);
- ``pull``: resolved as the logged-in principal pulls (AcrPull enforced, ``nodes.image_pull``),
  taking simulated time by the image's size, cached on the VM's disk (``var/lib/docker``), so a
  second pull, or a pull after deallocate and start, takes none;
- ``run``: a container is a process of the shared ``ContainerRuntime`` with the image's
  environment, the VM's managed identity endpoint and the workload faults of the AML tier
  (``nodes.workload_faults``, matched against the container's name); the WAA image refuses to
  start its Windows VM on TrustedLaunch or on a size without nested virtualization, with the
  message the WAA container prints (``nodes.containers``). Bind mounts (``-v SRC:DST[:ro]``)
  are recorded and shown by ``inspect``; a container is a process that sees the VM's disk at
  its own paths (no file system of its own), so only a mount of a path onto itself is accepted
  (``parse_volume``), and ``ro`` is recorded, not enforced.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from localazure.acr import images as acr_images
from localazure.acr import tokens as acr_tokens
from localazure.acr.registries import admin_credentials_match
from localazure.admin.routes import PREFIX
from localazure.compute import power, sandbox
from localazure.core.context import Context
from localazure.core.errors import AzureError
from localazure.core.http import json_body, json_response
from localazure.core.router import Router
from localazure.nodes import containers, image_pull, vm_catalog, workload_faults
from localazure.nodes import pool as node_pool
from localazure.settings import REDIRECTED_SUFFIXES

CONTAINER_KIND = "compute-container"
AGENT_PREFIX = PREFIX + "/compute/agent/docker"
TOKEN_USER = "00000000-0000-0000-0000-000000000000"


class DockerError(Exception):
    """What the docker CLI prints (``Error response from daemon: ...``), with its exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.message = message
        self.code = code


# -- the VM's Docker state ------------------------------------------------------------------------


def docker_dir(ctx: Context, record: dict[str, Any]) -> Path:
    return sandbox.disk_dir(ctx, record["disk_id"]) / "var" / "lib" / "docker"


def _image_cache_path(ctx: Context, record: dict[str, Any]) -> Path:
    return docker_dir(ctx, record) / "images.json"


def cached_images(ctx: Context, record: dict[str, Any]) -> list[dict[str, Any]]:
    path = _image_cache_path(ctx, record)
    return json.loads(path.read_text()) if path.exists() else []


def _cache_image(ctx: Context, record: dict[str, Any], ref: str, info: dict[str, Any]) -> None:
    cached = [i for i in cached_images(ctx, record) if i["ref"] != ref]
    cached.append(
        {
            "ref": ref,
            "digest": info["digest"],
            "size": info["size"],
            "info": info,
            "pulled_at": time.time(),
        }
    )
    path = _image_cache_path(ctx, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached))


def _cached(ctx: Context, record: dict[str, Any], ref: str) -> dict[str, Any] | None:
    wanted = _normalise(ref)
    for image in cached_images(ctx, record):
        if _normalise(image["ref"]) == wanted or image["digest"] == ref:
            return image
    return None


def _normalise(ref: str) -> str:
    try:
        return str(acr_images.parse_reference(ref))
    except ValueError:
        return ref


def container_key(record: dict[str, Any], container_id: str) -> str:
    return f"{power.key(record['id'])}|{container_id}"


def vm_containers(ctx: Context, vm_id: str) -> list[dict[str, Any]]:
    return ctx.store.values(CONTAINER_KIND, power.key(vm_id) + "|")


def save_container(ctx: Context, container: dict[str, Any]) -> None:
    ctx.store.put(CONTAINER_KIND, container["key"], container)


def log_path(ctx: Context, record: dict[str, Any], container_id: str) -> Path:
    return docker_dir(ctx, record) / "containers" / container_id / f"{container_id}-json.log"


# -- credentials ----------------------------------------------------------------------------------


def _principal_for(
    ctx: Context, registry_host: str, auth: dict[str, str] | None
) -> tuple[str, str | None]:
    """("admin", None), ("identity", object id) or ("anonymous", None) for a pull from
    ``registry_host`` with ``auth``; raises ``DockerError`` for rejected credentials."""
    registry = acr_images.find_registry_by_login_server(ctx, registry_host)
    if not auth or registry is None:
        return "anonymous", None
    username, password = auth.get("username", ""), auth.get("password", "")
    if username == TOKEN_USER:
        try:
            claims = acr_tokens.verify_refresh_token(
                ctx, password, registry["properties"]["loginServer"]
            )
        except acr_tokens.TokenError:
            raise _unauthorized(registry_host) from None
        return "identity", claims["sub"]
    if admin_credentials_match(ctx, registry, username, password):
        return "admin", None
    raise _unauthorized(registry_host)


def _unauthorized(host: str) -> DockerError:
    return DockerError(
        f'Error response from daemon: Get "https://{host}/v2/": unauthorized: authentication '
        "required, visit https://aka.ms/acr/authorization for more information."
    )


def _resolve(ctx: Context, ref: str, auth: dict[str, str] | None) -> dict[str, Any]:
    try:
        parsed = acr_images.parse_reference(ref)
    except ValueError as err:
        raise DockerError(f'invalid reference format: "{ref}": {err}', 125) from None
    kind, object_id = _principal_for(ctx, parsed.registry, auth)
    if kind == "admin":
        registry = acr_images.find_registry_by_login_server(ctx, parsed.registry)
        manifest = acr_images.find_manifest(
            ctx, registry["id"], parsed.repository, parsed.reference
        )
        if manifest is None:
            raise DockerError(
                f"Error response from daemon: manifest for {parsed} not found: manifest unknown: "
                "manifest tagged by the reference is not found"
            )
        return {"image": str(parsed), "digest": manifest["digest"], "size": manifest["imageSize"]}
    resolved = image_pull.resolve(ctx, str(parsed), object_id)
    if resolved.error is not None:
        raise DockerError(f"Error response from daemon: {resolved.error.message}")
    return resolved.record


# -- bind mounts ----------------------------------------------------------------------------------

IDENTITY_MOUNTS_ONLY = (
    "docker: Error response from daemon: localazure: -v {spec}: a container on an emulated VM "
    "is a process that sees the VM's disk at the VM's own paths (it has no file system of its "
    "own), so a bind mount can only map a path to itself (-v {source}:{source}[:ro]); mapping "
    "{source} to {destination} is not supported by the emulator (docs/emulator.md, Compute and "
    "Network)."
)


def parse_volume(spec: str) -> dict[str, str]:
    """``SRC:DST[:ro|rw]`` as Docker reads it, with the emulator's rule: DST == SRC."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise DockerError(
            f"docker: Error response from daemon: invalid volume specification: '{spec}'.", 125
        )
    source, destination = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if not source.startswith("/"):
        raise DockerError(
            f'docker: Error response from daemon: create {source}: "{source}" includes invalid '
            'characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. '
            "If you intended to pass a host directory, use absolute path.",
            125,
        )
    if not destination.startswith("/"):
        raise DockerError(
            'docker: Error response from daemon: invalid mount config for type "bind": invalid '
            f"mount path: '{destination}' mount path must be absolute.",
            125,
        )
    if mode not in ("ro", "rw"):
        raise DockerError(f"docker: Error response from daemon: invalid mode: {mode}.", 125)
    if os.path.normpath(destination) != os.path.normpath(source):
        raise DockerError(
            IDENTITY_MOUNTS_ONLY.format(spec=spec, source=source, destination=destination), 125
        )
    return {
        "source": os.path.normpath(source),
        "destination": os.path.normpath(source),
        "mode": mode,
    }


def _mount_sources(mounts: list[dict[str, str]]) -> None:
    """A missing source directory is created, as ``docker run -v`` does."""
    for mount in mounts:
        try:
            os.makedirs(mount["source"], exist_ok=True)
        except OSError as err:
            raise DockerError(
                "docker: Error response from daemon: error while creating mount source path "
                f"'{mount['source']}': mkdir {mount['source']}: {err.strerror.lower()}.",
                125,
            ) from None


# -- the operations -------------------------------------------------------------------------------


def login(ctx: Context, record: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    host = str(body.get("registry") or "").lower()
    if acr_images.find_registry_by_login_server(ctx, host) is None:
        raise DockerError(
            f'Error response from daemon: Get "https://{host}/v2/": dial tcp: lookup {host}: no '
            "such host"
        )
    _principal_for(
        ctx,
        host,
        {"username": str(body.get("username", "")), "password": str(body.get("password", ""))},
    )
    return {"output": "Login Succeeded\n"}


async def pull(ctx: Context, record: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    ref = str(body.get("image") or "")
    info = _resolve(ctx, ref, body.get("auth"))
    if _cached(ctx, record, ref) and _cached(ctx, record, ref)["digest"] == info["digest"]:
        return {"output": f"Status: Image is up to date for {_normalise(ref)}\n", "seconds": 0.0}
    seconds = node_pool.timing(ctx).pull(info["size"])
    await asyncio.sleep(seconds)
    _cache_image(ctx, record, _normalise(ref), info)
    return {
        "output": f"{info['digest']}: Pulling from {_normalise(ref)}\nDigest: {info['digest']}\n"
        f"Status: Downloaded newer image for {_normalise(ref)}\n",
        "seconds": seconds,
    }


def list_images(ctx: Context, record: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    return {"images": cached_images(ctx, record)}


def run(
    ctx: Context, record: dict[str, Any], vm: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    ref = str(body.get("image") or "")
    image = _cached(ctx, record, ref)
    if image is None:
        raise DockerError(f"Unable to find image '{ref}' locally", 125)
    name = str(body.get("name") or f"vm_{secrets.token_hex(4)}")
    if any(c["name"] == name and c["status"] != "removed" for c in vm_containers(ctx, vm["id"])):
        raise DockerError(
            f'docker: Error response from daemon: Conflict. The container name "/{name}" is '
            "already in use. You have to remove (or rename) that container to be able to reuse "
            "that name.",
            125,
        )
    command = body.get("command")
    if not command:
        raise DockerError("docker: Error response from daemon: No command specified.", 125)
    mounts = [parse_volume(str(spec)) for spec in body.get("volumes") or []]
    _mount_sources(mounts)
    container_id = secrets.token_hex(32)
    now = ctx.clock()
    fault = workload_faults.take_fault(ctx, name)
    delay = fault["delay_s"] if fault and fault["fault"] == "slow_start" else 0.0
    container = {
        "key": container_key(record, container_id),
        "id": container_id,
        "name": name,
        "vm_id": vm["id"],
        "image": image["ref"],
        "digest": image["digest"],
        "command": command,
        "env": {str(k): str(v) for k, v in (body.get("env") or {}).items()},
        "auto_remove": bool(body.get("rm")),
        "mounts": mounts,
        "status": "created",
        "created_at": now,
        "start_at": now + delay,
        "started_at": None,
        "finished_at": None,
        "exit_code": None,
        "fault": fault,
        "frozen": False,
        "boot": record["boot"],
    }
    save_container(ctx, container)
    return {"id": container_id}


def find_container(
    ctx: Context, vm_id: str, ref: str, *, removed_ok: bool = False
) -> dict[str, Any]:
    """The container of that name or id prefix; a removed one only with ``removed_ok`` (the
    attached client of ``docker run --rm`` reads the end of its log after the removal)."""
    for container in vm_containers(ctx, vm_id):
        if container["status"] == "removed" and not removed_ok:
            continue
        if container["name"] == ref or (len(ref) >= 4 and container["id"].startswith(ref)):
            return container
    raise DockerError(f"Error response from daemon: No such container: {ref}")


def public_view(container: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "name",
        "image",
        "digest",
        "command",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "exit_code",
    )
    return {**{k: container[k] for k in keys}, "mounts": container.get("mounts") or []}


# -- starting and watching containers (called by the lifecycle) ----------------------------------


def container_env(
    ctx: Context,
    record: dict[str, Any],
    vm: dict[str, Any],
    container: dict[str, Any],
    workdir: Path,
) -> dict[str, str]:
    image = next(
        (i for i in cached_images(ctx, record) if i["digest"] == container["digest"]), {"info": {}}
    )
    platform = {
        "HOSTNAME": container["id"][:12],
        **identity_environment(ctx, record),
    }
    return containers.container_environment(
        ctx.settings.state_dir,
        workdir,
        containers.image_environment(container["image"], image["info"] or {}),
        container["env"],
        workload_faults.fault_environment(container["fault"], container["command"]),
        # The stand-in Windows VM boots for a time by the VM's size, as on Azure ML's nodes.
        _vm_boot_environment(ctx, vm, container),
        platform,
    )


def _vm_boot_environment(
    ctx: Context, vm: dict[str, Any], container: dict[str, Any]
) -> dict[str, str]:
    size = vm_catalog.find(vm["properties"]["hardwareProfile"]["vmSize"])
    if size is None:
        return {}
    return containers.waa_vm_environment(container["image"], size, node_pool.timing(ctx))


def identity_environment(ctx: Context, record: dict[str, Any]) -> dict[str, str]:
    """The managed identity endpoint, as Azure ML's containers get it (the emulator has no
    169.254.169.254), and the emulator's CA."""
    env = {
        "REQUESTS_CA_BUNDLE": str(ctx.settings.ca_bundle),
        "SSL_CERT_FILE": str(ctx.settings.ca_bundle),
        # Registry host names resolve to the emulator, as ``localazure env`` makes them for the
        # controller (``client_hook``): the VM's /etc/hosts, so to speak.
        "LOCALAZURE_DNS": ",".join(REDIRECTED_SUFFIXES),
        "LOCALAZURE_ENDPOINT": ctx.endpoint,
    }
    if record.get("identity_secret"):
        env.update(
            {
                "IDENTITY_ENDPOINT": f"{ctx.endpoint}/msi/token",
                "IDENTITY_HEADER": record["identity_secret"],
            }
        )
    return env


def kvm_refusal(vm: dict[str, Any], container: dict[str, Any]) -> str | None:
    if not containers.needs_nested_virtualization(container["image"]):
        return None
    size = vm_catalog.find(vm["properties"]["hardwareProfile"]["vmSize"])
    return containers.no_kvm_reason(size, power.security_type(vm), vm["name"])


# -- routes ---------------------------------------------------------------------------------------


def register(router: Router, ctx: Context) -> None:
    def caller(request: Request) -> tuple[dict[str, Any], dict[str, Any]]:
        secret = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        for record in power.all_records(ctx):
            if secret and secrets.compare_digest(record["agent_secret"], secret):
                vm = ctx.store.get_resource(record["id"])
                if vm is not None and power.state(record, ctx.clock()) == "running":
                    return record, vm
        raise AzureError(
            401,
            "Unauthorized",
            "Cannot connect to the Docker daemon. Is the docker daemon running?",
        )

    async def handle(request: Request, op: str) -> Response:
        record, vm = caller(request)
        body = await json_body(request)
        try:
            if op == "login":
                result = login(ctx, record, body)
            elif op == "pull":
                result = await pull(ctx, record, body)
            elif op == "images":
                result = list_images(ctx, record, body)
            elif op == "run":
                result = run(ctx, record, vm, body)
            elif op == "ps":
                result = {
                    "containers": [
                        public_view(c)
                        for c in vm_containers(ctx, vm["id"])
                        if c["status"] != "removed"
                        and (body.get("all") or c["status"] in ("created", "running"))
                    ]
                }
            elif op == "inspect":
                result = public_view(find_container(ctx, vm["id"], str(body.get("container"))))
            elif op == "logs":
                container = find_container(
                    ctx, vm["id"], str(body.get("container")), removed_ok=bool(body.get("attached"))
                )
                path = log_path(ctx, record, container["id"])
                offset = int(body.get("offset") or 0)
                data = b""
                if path.exists():
                    with open(path, "rb") as f:
                        f.seek(offset)
                        data = f.read(1 << 20)
                result = {
                    "data": data.decode("utf-8", "replace"),
                    "offset": offset + len(data),
                    "status": container["status"],
                    "exit_code": container["exit_code"],
                }
            elif op == "kill":
                container = find_container(ctx, vm["id"], str(body.get("container")))
                if container["status"] not in ("created", "running"):
                    raise DockerError(
                        f"Error response from daemon: Cannot kill container: {body.get('container')}: "
                        f"Container {container['id']} is not running"
                    )
                container["kill_requested"] = True
                save_container(ctx, container)
                result = {"id": container["id"]}
            elif op == "rm":
                container = find_container(ctx, vm["id"], str(body.get("container")))
                if container["status"] in ("created", "running") and not body.get("force"):
                    raise DockerError(
                        "Error response from daemon: You cannot remove a running container "
                        f"{container['id']}. Stop the container before attempting removal or "
                        "force remove"
                    )
                container["remove_requested"] = True
                container["kill_requested"] = container["status"] in ("created", "running")
                save_container(ctx, container)
                result = {"id": container["id"]}
            else:
                raise DockerError(f"docker: '{op}' is not a docker command.", 1)
        except DockerError as err:
            return json_response({"error": err.message, "code": err.code}, 400)
        return json_response(result)

    router.add("POST", AGENT_PREFIX + "/{op}", handle, auth="none")
