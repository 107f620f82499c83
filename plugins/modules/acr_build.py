#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: acr_build
short_description: Build a Docker image from a local folder with ACR Tasks
version_added: "0.2.0"
description:
  - Builds a Dockerfile context from a folder on the controller in an Azure Container Registry
    with ACR Tasks, as C(az acr build) does, and pushes the image to that registry. Nothing is
    built on the controller and no Docker daemon is needed.
  - The folder is packed into a reproducible tar.gz (sorted, owner and times zeroed; paths
    matched by C(.dockerignore) and C(.git) left out), uploaded to the registry's source upload
    URL (C(listBuildSourceUploadUrl)), and built by a quick run (C(scheduleRun) with a
    C(DockerBuildRequest)); the module waits for the run and returns its digest and log.
  - Idempotent by context digest. The SHA-256 of the packed context names an extra tag,
    C(<repository>:src-<12 hex digits>), pushed with the image. When every image tag and that
    tag exist and point at one digest, the same context was built already and nothing runs.
    A changed file, Dockerfile or build argument changes the digest and builds again.
  - In check mode the folder and its Dockerfile are checked and the registry is read; nothing is
    uploaded or built.
options:
  resource_group:
    description: Resource group of the registry.
    type: str
    required: true
  registry:
    description: Name of the registry (not its login server).
    type: str
    required: true
  context:
    description: Folder on the controller holding the Dockerfile and what it copies.
    type: path
    required: true
  dockerfile:
    description: Path of the Dockerfile relative to I(context).
    type: str
    default: Dockerfile
  image_names:
    description:
      - Images to build, C(repository:tag) in the registry (C({{.Run.ID}}) is replaced by the
        run id).
    type: list
    elements: str
    required: true
  build_args:
    description: Build arguments (C(--build-arg NAME=VALUE)). They count in the context digest.
    type: dict
    default: {}
  target:
    description: Build stage to stop at (C(--target)).
    type: str
  platform:
    description: Platform of the image, C(linux/amd64) or C(linux/arm64).
    type: str
    default: linux/amd64
  timeout:
    description: Seconds the build may take, and the module waits for it.
    type: int
    default: 3600
extends_documentation_fragment:
  - azure.azcollection.azure
author:
  - OpenAdapt evaluation infrastructure team (@OpenAdaptAI)
notes:
  - Supports C(--check) and C(--diff) (the digest of each image tag before and after).
  - Build arguments are sent to Azure as plain arguments; do not pass secrets as build arguments.
"""

EXAMPLES = r"""
- name: Build the evaluation image on top of the WAA image
  openadapt.azure_eval.acr_build:
    resource_group: openadapt-agents
    registry: openadaptevals
    context: "{{ playbook_dir }}/../docker/waa"
    image_names:
      - waa/winarena:eval
"""

RETURN = r"""
digest:
  description: Manifest digest of the image.
  returned: when the image exists after the task
  type: str
  sample: sha256:3b7e1f...
context_digest:
  description: SHA-256 of the packed context (names the C(src-) tag).
  returned: always
  type: str
images:
  description: Fully qualified images.
  returned: always
  type: list
  elements: str
  sample: [openadaptevals.azurecr.io/waa/winarena:eval]
run_id:
  description: The ACR Tasks run that built the image.
  returned: when a build ran
  type: str
  sample: ca1
built:
  description: Whether a build ran (or would run, in check mode).
  returned: always
  type: bool
log:
  description: The last lines of the run's log.
  returned: when a build ran
  type: list
  elements: str
"""

import fnmatch
import gzip
import hashlib
import io
import os
import tarfile
import time

try:
    from azure.containerregistry import ContainerRegistryClient
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.storage.blob import BlobClient
except ImportError:
    # azure_rm_common reports missing SDKs
    pass

from ansible_collections.azure.azcollection.plugins.module_utils.azure_rm_common import (
    AzureRMModuleBase,
)

TASKS_API_VERSION = "2019-06-01-preview"
ACR_AUDIENCE = "https://management.azure.com"
TERMINAL = ("Succeeded", "Failed", "Canceled", "Error", "Timeout")
LOG_TAIL = 40


def dockerignore_patterns(root):
    path = os.path.join(root, ".dockerignore")
    patterns = [".git", ".git/**"]
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith("#"):
                    patterns.append(line.rstrip("/").removeprefix("./"))
    return patterns


def ignored(relative, patterns):
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern[1:] if negate else pattern
        if any(fnmatch.fnmatch(c, bare) for c in candidates):
            verdict = not negate
    return verdict


def pack_context(root):
    """A reproducible tar.gz of the folder and the SHA-256 of its uncompressed tar."""
    patterns = dockerignore_patterns(root)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                relative = os.path.relpath(full, root).replace(os.sep, "/")
                if ignored(relative, patterns) or not os.path.isfile(full):
                    continue
                info = tarfile.TarInfo(relative)
                info.size = os.path.getsize(full)
                info.mode = 0o755 if os.access(full, os.X_OK) else 0o644
                info.mtime = 0
                with open(full, "rb") as handle:
                    tar.addfile(info, handle)
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0), hashlib.sha256(raw).hexdigest()


class AzureRMACRBuild(AzureRMModuleBase):
    def __init__(self):
        self.module_arg_spec = dict(
            resource_group=dict(type="str", required=True),
            registry=dict(type="str", required=True),
            context=dict(type="path", required=True),
            dockerfile=dict(type="str", default="Dockerfile"),
            image_names=dict(type="list", elements="str", required=True),
            build_args=dict(type="dict", default={}),
            target=dict(type="str"),
            platform=dict(type="str", default="linux/amd64"),
            timeout=dict(type="int", default=3600),
        )
        self.results = dict(changed=False, built=False, images=[])
        super().__init__(self.module_arg_spec, supports_check_mode=True, supports_tags=False)

    def exec_module(self, **kwargs):
        params = self.module.params
        root = params["context"]
        if not os.path.isdir(root):
            self.fail(f"context: '{root}' is not a folder")
        if not os.path.isfile(os.path.join(root, params["dockerfile"])):
            self.fail(f"dockerfile: '{params['dockerfile']}' was not found in '{root}'")
        platform = params["platform"].split("/")
        if len(platform) != 2 or platform[0] != "linux":
            self.fail(f"platform: '{params['platform']}' must be linux/<architecture>")
        for name in params["image_names"]:
            repository, sep, tag = name.rpartition(":")
            if not sep or not repository or "/" in tag or "@" in name:
                self.fail(f"image_names: '{name}' must be repository:tag")

        archive, digest = pack_context(root)
        # Build arguments and the build's own settings are part of what is built.
        settings = repr(
            (params["dockerfile"], sorted(params["build_args"].items()), params["target"])
        )
        context_digest = hashlib.sha256(f"{digest}|{settings}".encode()).hexdigest()
        source_tag = f"{params['image_names'][0].rpartition(':')[0]}:src-{context_digest[:12]}"
        tags = list(params["image_names"]) + [source_tag]
        self.results["context_digest"] = f"sha256:{context_digest}"

        registry = self._registry()
        login_server = registry.login_server.lower() if registry else None
        server = login_server or f"{params['registry'].lower()}.azurecr.io"
        self.results["images"] = [f"{server}/{name}" for name in params["image_names"]]
        before = self._digests(login_server, tags) if registry else {t: None for t in tags}
        current = set(before.values())
        if len(current) == 1 and None not in current:
            self.results["digest"] = current.pop()
            return self.results

        self.results.update(changed=True, built=True)
        if self.module._diff:
            self.results["diff"] = dict(before={"tags": before}, after={"tags": "(built)"})
        if self.check_mode:
            return self.results
        if registry is None:
            self.fail(
                f"registry '{params['registry']}' was not found in resource group "
                f"'{params['resource_group']}'; create it first (role openadapt.azure_eval.acr)"
            )
        self._build(archive, tags, platform[1])
        after = self._digests(login_server, tags)
        missing = [t for t, d in after.items() if d is None]
        if missing:
            self.fail(f"the build succeeded but these tags are missing: {', '.join(missing)}")
        self.results["digest"] = after[tags[0]]
        if self.module._diff:
            self.results["diff"]["after"] = {"tags": after}
        return self.results

    def _client(self):
        return self.get_mgmt_svc_client(
            ContainerRegistryManagementClient,
            base_url=self._cloud_environment.endpoints.resource_manager,
            api_version=TASKS_API_VERSION,
        )

    def _registry(self):
        try:
            return self.containerregistry_client.registries.get(
                self.module.params["resource_group"], self.module.params["registry"]
            )
        except ResourceNotFoundError:
            return None

    def _digests(self, login_server, tags):
        client = ContainerRegistryClient(
            endpoint=f"https://{login_server}",
            credential=self.azure_auth.azure_credential_track2,
            audience=ACR_AUDIENCE,
        )
        digests = {}
        for tag in tags:
            repository, name = tag.rsplit(":", 1)
            try:
                digests[tag] = client.get_manifest_properties(repository, name).digest
            except ResourceNotFoundError:
                digests[tag] = None
        return digests

    def _build(self, archive, tags, architecture):
        from azure.mgmt.containerregistry.v2019_06_01_preview.models import (
            Argument,
            DockerBuildRequest,
            PlatformProperties,
        )

        params = self.module.params
        rg, name = params["resource_group"], params["registry"]
        client = self._client()
        try:
            upload = client.registries.get_build_source_upload_url(rg, name)
            BlobClient.from_blob_url(upload.upload_url).upload_blob(archive, overwrite=True)
            request = DockerBuildRequest(
                source_location=upload.relative_path,
                image_names=tags,
                is_push_enabled=True,
                docker_file_path=params["dockerfile"],
                target=params["target"],
                arguments=[
                    Argument(name=k, value=str(v), is_secret=False)
                    for k, v in sorted(params["build_args"].items())
                ],
                platform=PlatformProperties(os="Linux", architecture=architecture),
                timeout=params["timeout"],
            )
            run = client.registries.begin_schedule_run(rg, name, request).result()
        except HttpResponseError as err:
            code = err.error.code if err.error else err.status_code
            self.fail(f"scheduling the build in {name} failed: {code}: {err.message}")
        self.results["run_id"] = run.run_id
        deadline = time.monotonic() + params["timeout"]
        while run.status not in TERMINAL:
            if time.monotonic() > deadline:
                client.runs.begin_cancel(rg, name, run.run_id)
                self.fail(f"the build {run.run_id} did not finish within {params['timeout']} s")
            time.sleep(1)
            run = client.runs.get(rg, name, run.run_id)
        log = self._log(client, run.run_id)
        self.results["log"] = log
        if run.status != "Succeeded":
            tail = "\n".join(log[-10:])
            self.fail(
                f"the build {run.run_id} ended {run.status}: {run.run_error_message or ''}\n{tail}"
            )
        return run

    def _log(self, client, run_id):
        params = self.module.params
        try:
            link = client.runs.get_log_sas_url(
                params["resource_group"], params["registry"], run_id
            ).log_link
            text = (
                BlobClient.from_blob_url(link).download_blob().readall().decode("utf-8", "replace")
            )
        except HttpResponseError as err:
            self.module.warn(f"could not read the log of run {run_id}: {err.message}")
            return []
        return text.splitlines()[-LOG_TAIL:]


def main():
    AzureRMACRBuild()


if __name__ == "__main__":
    main()
